"""The riskmodel command: sub-commands listed, each command's module imported only when it
runs, errors reported in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from riskmodel.cli import LISTED, build_parser, main

HEAVY = ("pandas", "numpy", "lightgbm", "sklearn", "sqlalchemy", "fastapi")


def _run_alone(argv: list[str]) -> tuple[str, set[str]]:
    """``riskmodel ARGV`` in a fresh interpreter: its output, and the heavy libraries loaded."""
    probe = (
        "import json, sys\n"
        "from riskmodel.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout, set(json.loads(done.stderr.splitlines()[-1]))


def test_help_lists_the_sub_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "riskmodel.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in ("simulate", "ingest", "db", *LISTED):
        assert f"    {command}" in out


def test_help_imports_none_of_the_heavy_libraries(tmp_path: Path) -> None:
    out, loaded = _run_alone(["--help"])
    assert "quickstart" in out
    assert loaded == set()
    for argv in (["serve", "--help"], ["keys", "list", "--api-keys", str(tmp_path / "k.json")]):
        out, loaded = _run_alone(argv)
        assert out
        assert loaded == set(), argv
    # The probe sees them when a command does need them.
    out, loaded = _run_alone(["features", "--help"])
    assert "usage: riskmodel features" in out
    assert {"pandas", "numpy"} <= loaded


def test_the_listing_is_what_the_commands_say_of_themselves() -> None:
    assert set(LISTED) == {plugin.name for plugin in entry_points(group="riskmodel.commands")}
    assert build_parser(only=[]).format_help() == build_parser().format_help()


def test_a_command_built_alone_is_the_command_of_the_whole_parser(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for command in ("simulate", "db", *LISTED):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        alone = capsys.readouterr().out
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        assert alone == capsys.readouterr().out, command


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
