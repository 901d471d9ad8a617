"""The analyst notebook runs from top to bottom on the sample data, and is stored clean."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_train_and_evaluate.ipynb"


def test_the_notebook_is_stored_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)

    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == []
            assert cell.execution_count is None


def test_the_notebook_trains_compares_and_promotes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RISKMODEL_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("RISKMODEL_NOTEBOOK_OUT", str(tmp_path / "reports"))
    monkeypatch.setenv("RISKMODEL_DATA", str(ROOT / "data" / "sample"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)

    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": ROOT}}
    ).execute()

    registry = sorted((tmp_path / "registry" / "versions").iterdir())
    assert len(registry) == 2
    assert (tmp_path / "registry" / "aliases.json").is_file()
    last = notebook.cells[-1].outputs[0]["data"]["text/plain"]
    assert "champion" in last
    assert any((tmp_path / "reports").glob("*/report.md"))
