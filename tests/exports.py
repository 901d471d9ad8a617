"""A dataset directory as a partitioned export writes it: a folder of Parquet files per table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def as_folders(source: Path, target: Path, parts: int) -> Path:
    """``source``'s dataset with every table a folder of ``parts`` Parquet files."""
    target.mkdir()
    for file in sorted(source.glob("*.parquet")):
        folder = target / file.stem
        folder.mkdir()
        frame = pd.read_parquet(file)
        size = -(-len(frame) // parts)
        for i in range(parts):
            frame.iloc[i * size : (i + 1) * size].to_parquet(folder / f"part-{i}.parquet")
    return target
