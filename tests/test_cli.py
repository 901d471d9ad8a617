"""The riskmodel command: sub-commands listed, errors reported in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from riskmodel.cli import main


def test_help_lists_the_sub_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "riskmodel.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in ("simulate", "ingest", "db"):
        assert command in out


def test_ingest_then_info(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"

    assert main(["ingest", str(tiny_dir), "--database-url", url]) == 0
    assert main(["db", "info", "--database-url", url]) == 0

    out = capsys.readouterr().out
    assert "loaded 14 rows" in out
    assert "refund_requests:          3 rows" in out


def test_a_bad_dataset_exits_1_with_the_place(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tiny_dir / "labels.csv").write_text("request_id,is_abuse,labeled_at\nr1,true,soon\n")

    status = main(["ingest", str(tiny_dir), "--database-url", f"sqlite:///{tmp_path / 'x.db'}"])

    assert status == 1
    assert capsys.readouterr().err == (
        "error: labels.csv, row 1, column labeled_at: 'soon' is not an ISO 8601 timestamp\n"
    )


def test_flags_are_as_strict_in_files_as_in_domain_types(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "labels.csv").write_text("request_id,is_abuse,labeled_at\nr1,yes,2026-01-01\n")

    status = main(["ingest", str(tmp_path), "--database-url", f"sqlite:///{tmp_path / 'x.db'}"])

    assert status == 1
    assert "column is_abuse: 'yes' is not true or false" in capsys.readouterr().err
