"""``riskmodel features``: the catalogue document is current; build writes a table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.catalog import CATALOG
from features.commands import catalogue_markdown
from riskmodel.cli import main

DOC = Path(__file__).resolve().parent.parent / "docs" / "features.md"


def test_the_catalogue_document_is_generated_from_the_definitions() -> None:
    assert DOC.read_text().endswith(catalogue_markdown()), (
        "docs/features.md is stale: regenerate it with `riskmodel features list --markdown`"
    )


def test_every_feature_says_what_it_means() -> None:
    assert [name for name, f in CATALOG.items() if len(f.doc) < 15] == []


def test_build_from_a_directory_and_from_the_store(tiny_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["ingest", str(tiny_dir), "--database-url", url]) == 0

    assert (
        main(["features", "build", "--from", str(tiny_dir), "--out", str(tmp_path / "a.parquet")])
        == 0
    )
    assert (
        main(["features", "build", "--database-url", url, "--out", str(tmp_path / "b.parquet")])
        == 0
    )

    a = pd.read_parquet(tmp_path / "a.parquet")
    b = pd.read_parquet(tmp_path / "b.parquet")
    assert list(a.index) == ["r1", "r2", "r3"]
    assert list(a.columns) == list(CATALOG)
    pd.testing.assert_frame_equal(a, b)
    assert a.loc["r1", "user_confirmed_abuse_all"] == 1


def test_build_refuses_other_file_types(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["features", "build", "--from", str(tiny_dir), "--out", str(tmp_path / "f.csv")])

    assert status == 1
    assert "written as .parquet" in capsys.readouterr().err
    assert not (tmp_path / "f.csv").exists()
