"""The notebooks run from top to bottom on the sample data, and are stored clean: the
analysts' (train, evaluate, compare, promote) and the risk managers' (tune, backtest)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from features.policy_fields import load_with_catalogue

from .notebooks import NOTEBOOKS, execute


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)

    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == []
            assert cell.execution_count is None


def test_the_training_notebook_trains_compares_and_promotes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = execute("01_train_and_evaluate.ipynb", tmp_path, monkeypatch, "reports")

    registry = sorted((tmp_path / "registry" / "versions").iterdir())
    assert len(registry) == 2
    assert (tmp_path / "registry" / "aliases.json").is_file()
    last = notebook.cells[-1].outputs[0]["data"]["text/plain"]
    assert "champion" in last
    assert any((tmp_path / "reports").glob("*/report.md"))


def test_the_tuning_notebook_tunes_writes_and_backtests_a_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = execute("02_tune_thresholds.ipynb", tmp_path, monkeypatch, "out")

    assert (tmp_path / "out" / "tuning" / "tradeoff.png").stat().st_size > 10_000
    tuned = load_with_catalogue(tmp_path / "out" / "tuning" / "tuned.yaml")
    assert tuned.version == "starter-3-tuned"
    last = notebook.cells[-1].outputs[0]["data"]["text/plain"]
    assert "starter-3-tuned" in last
    assert f"'review': {tuned.spec.thresholds.review!r}" in last
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert len(images) == 2  # the trade-off plot and the grid of reviews a day
