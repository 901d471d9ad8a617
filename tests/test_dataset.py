"""The dataset contract: values are read the same whatever file type carries them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from riskmodel import dataset
from riskmodel.errors import DatasetError

from .conftest import tiny_tables, write_tables


def test_timestamps_are_utc_microseconds_whatever_the_offset() -> None:
    raw = pd.DataFrame(
        {
            "user_id": ["a", "b", "c"],
            "registered_at": [
                "2026-01-01T00:00:00Z",
                "2026-01-01T08:00:00+08:00",
                "2026-01-01 00:00:00.000001",
            ],
        }
    )

    users = dataset.normalise("users", raw)

    assert users["registered_at"].tolist() == [
        1_767_225_600_000_000,
        1_767_225_600_000_000,
        1_767_225_600_000_001,
    ]


def test_native_parquet_types_are_accepted(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["a", "b"],
            "registered_at": pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True),
            "phone_verified": [True, False],
        }
    )
    frame.to_parquet(tmp_path / "users.parquet")

    users = dataset.read_table(tmp_path / "users.parquet", "users")

    assert users["phone_verified"].tolist() == [True, False]
    assert users["registered_at"].iloc[1] - users["registered_at"].iloc[0] == 86_400_000_000


def test_optional_columns_may_be_absent_and_empty_cells_are_null() -> None:
    raw = pd.DataFrame({"user_id": ["a"], "registered_at": ["2026-01-01T00:00:00Z"]})

    users = dataset.normalise("users", raw)

    assert users["phone_verified"].tolist() == [None]
    assert users[dataset.EXTRA].tolist() == [None]


def test_a_table_in_two_formats_is_ambiguous(tmp_path: Path) -> None:
    write_tables(tmp_path, {"users": tiny_tables()["users"]}, "csv")
    write_tables(tmp_path, {"users": tiny_tables()["users"]}, "parquet")

    with pytest.raises(DatasetError, match=r"both users\.parquet and users\.csv exist"):
        dataset.read_dataset(tmp_path)


def test_an_empty_directory_says_what_it_expected(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no table files .* users.parquet\|csv"):
        dataset.read_dataset(tmp_path)


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("user_id", "  ", "a value is required"),
        ("registered_at", "2026-13-01", "is not an ISO 8601 timestamp"),
        ("phone_verified", "perhaps", "is not true or false"),
    ],
)
def test_bad_values_name_row_and_column(column: str, value: str, problem: str) -> None:
    raw = tiny_tables()["users"]
    raw.loc[1, column] = value

    with pytest.raises(DatasetError) as caught:
        dataset.normalise("users", raw, file="users.csv")

    assert (caught.value.row, caught.value.column) == (2, column)
    assert problem in str(caught.value)
