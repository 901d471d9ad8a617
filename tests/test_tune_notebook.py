"""The risk managers' tuning notebook runs from top to bottom on the sample data, and is
stored clean."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from features.policy_commands import load_with_catalogue

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "02_tune_thresholds.ipynb"


def test_the_notebook_is_stored_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)

    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == []
            assert cell.execution_count is None


def test_the_notebook_tunes_writes_and_backtests_a_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RISKMODEL_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("RISKMODEL_NOTEBOOK_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("RISKMODEL_DATA", str(ROOT / "data" / "sample"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)

    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": ROOT}}
    ).execute()

    assert (tmp_path / "out" / "tuning" / "tradeoff.png").stat().st_size > 10_000
    tuned = load_with_catalogue(tmp_path / "out" / "tuning" / "tuned.yaml")
    assert tuned.version == "starter-2-tuned"
    last = notebook.cells[-1].outputs[0]["data"]["text/plain"]
    assert "starter-2-tuned" in last
    assert f"'review': {tuned.spec.thresholds.review!r}" in last
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert len(images) == 2  # the trade-off plot and the grid of reviews a day
