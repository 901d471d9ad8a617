"""Running the analyst notebooks in tests: on the sample data, writing only below a
temporary folder, with the kernel started in the repository root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def execute(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: str) -> Any:
    """Run ``notebooks/<name>`` top to bottom; the executed notebook (with its outputs).

    The notebooks read ``RISKMODEL_DATA``, ``RISKMODEL_REGISTRY`` and
    ``RISKMODEL_NOTEBOOK_OUT``; ``out`` names the output folder below ``tmp_path``.
    """
    monkeypatch.setenv("RISKMODEL_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("RISKMODEL_NOTEBOOK_OUT", str(tmp_path / out))
    monkeypatch.setenv("RISKMODEL_DATA", str(ROOT / "data" / "sample"))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": ROOT}}
    ).execute()
    return notebook
