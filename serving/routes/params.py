"""Path and query parameters shared by the routes: identifiers as the bodies take them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator

from serving.schemas import ID_PATTERN, storable, trimmed

__all__ = ["PathId"]

PathId = Annotated[
    str,
    Path(min_length=1, max_length=128, json_schema_extra={"pattern": ID_PATTERN}),
    AfterValidator(storable),
    AfterValidator(trimmed),
]
