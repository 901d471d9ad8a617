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


def _requests(**columns: list[object]) -> pd.DataFrame:
    base: dict[str, list[object]] = {
        "request_id": ["r1", "r2"],
        "order_id": ["o1", "o1"],
        "user_id": ["u1", "u1"],
        "requested_at": ["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"],
        "amount": ["10.00", "10.00"],
        "reason": ["unused", "unused"],
    }
    return pd.DataFrame(base | columns)


def test_a_request_outcome_is_its_amount_and_its_time() -> None:
    frame = dataset.normalise(
        "refund_requests",
        _requests(paid_amount=["0.00", None], resolved_at=["2026-01-02T05:00:00Z", None]),
    )

    assert frame["paid_amount"].tolist()[0] == 0  # refused
    assert pd.isna(frame["paid_amount"].tolist()[1])  # unanswered
    assert frame["resolved_at"].tolist()[0] == 1_767_330_000_000_000


@pytest.mark.parametrize(
    ("columns", "lacking"),
    [
        ({"paid_amount": ["5.00", None], "resolved_at": [None, None]}, "resolved_at"),
        (
            {"paid_amount": [None, None], "resolved_at": [None, "2026-01-04T00:00:00Z"]},
            "paid_amount",
        ),
    ],
)
def test_an_outcome_needs_both_its_amount_and_its_time(
    columns: dict[str, list[object]], lacking: str
) -> None:
    with pytest.raises(DatasetError, match=rf"column {lacking}: .* given without {lacking}"):
        dataset.normalise("refund_requests", _requests(**columns))
