"""Path and query parameters shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator

from serving.schemas import storable

__all__ = ["PathId"]

PathId = Annotated[str, Path(min_length=1, max_length=128), AfterValidator(storable)]
