"""Errors raised by the refund risk service.

One hierarchy, so that callers (the CLI, the HTTP layer) map errors to exit codes
and status codes in one place::

    RiskModelError
    ├── DataError            bad input: a value, a row or a file that breaks the contract
    │   └── DatasetError     ... located in a dataset directory (table, row, column)
    └── StoreError           the event store cannot do what was asked
        └── SchemaVersionError   the database holds a schema this code does not know
"""

from __future__ import annotations

__all__ = [
    "DataError",
    "DatasetError",
    "RiskModelError",
    "SchemaVersionError",
    "StoreError",
]


class RiskModelError(Exception):
    """Base of every error this project raises on purpose."""


class DataError(RiskModelError):
    """Input that breaks the data contract."""


class DatasetError(DataError):
    """A problem at a place in a dataset directory.

    ``row`` is the 1-based data row of the file (the header is not counted), or
    ``None`` when the problem concerns the whole table (a missing column, a
    missing file).
    """

    def __init__(
        self,
        table: str,
        problem: str,
        *,
        row: int | None = None,
        column: str | None = None,
        file: str | None = None,
    ) -> None:
        self.table = table
        self.row = row
        self.column = column
        self.problem = problem
        self.file = file
        where = [file or table]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column}")
        super().__init__(f"{', '.join(where)}: {problem}")


class StoreError(RiskModelError):
    """The event store cannot do what was asked."""


class SchemaVersionError(StoreError):
    """The database schema is newer than this code, or unknown to it."""
