"""Shared vocabulary of the simulator: codes, time units, random streams and ID formatting.

Inside the simulator everything is a numpy array: timestamps are ``int64`` seconds since
the Unix epoch (``MISSING`` when absent), entities are ``int64`` indices, categories are
small integer codes into the tuples below. Only ``output`` turns them into DataFrames.

    >>> import numpy as np
    >>> format_ids("u", np.array([0, 123]), 7).tolist()
    ['u0000000', 'u0000123']
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = [
    "BAND_ABUSER",
    "BANK_CARD",
    "BURST",
    "CARD_CODE",
    "CHANNELS",
    "CHARGEBACK",
    "DAY",
    "DISPUTE",
    "DUPLICATE_CHARGE",
    "EXPLOITER",
    "FAKE_BUYER",
    "GAME_CURRENCY",
    "HONEST",
    "HOUR",
    "INVALID_CODE",
    "ISSUER_REPORT",
    "LABEL_SOURCES",
    "MEMBERSHIP",
    "MINUTE",
    "MISSING",
    "NOT_AS_DESCRIBED",
    "NOT_DELIVERED",
    "OPPORTUNIST",
    "OTHER",
    "PARTIAL_USE",
    "PAYMENT_METHODS",
    "PRODUCT_TYPES",
    "REASONS",
    "REVIEW",
    "RING",
    "SERIAL",
    "SERVICE",
    "UNUSED",
    "Array",
    "choice_codes",
    "dotted_quads",
    "format_ids",
    "id_width",
    "lognormal_seconds",
    "streams",
    "take_ids",
    "timestamps",
    "uniform_seconds",
]

Array = npt.NDArray[Any]

MINUTE = 60
HOUR = 3_600
DAY = 86_400
MISSING = -1
"""An absent timestamp or entity index."""

# Spelled out (not taken from the domain enumerations) so that the integer codes below
# cannot shift if an enumeration is reordered; a test checks both agree.
PRODUCT_TYPES: tuple[str, ...] = ("card_code", "membership", "game_currency", "service")
CARD_CODE, MEMBERSHIP, GAME_CURRENCY, SERVICE = range(4)

REASONS: tuple[str, ...] = (
    "not_delivered",
    "invalid_code",
    "not_as_described",
    "unused",
    "partial_use",
    "duplicate_charge",
    "other",
)
(
    NOT_DELIVERED,
    INVALID_CODE,
    NOT_AS_DESCRIBED,
    UNUSED,
    PARTIAL_USE,
    DUPLICATE_CHARGE,
    OTHER,
) = range(7)

PAYMENT_METHODS: tuple[str, ...] = ("alipay", "wechat_pay", "bank_card", "balance")
BANK_CARD = 2

CHANNELS: tuple[str, ...] = ("app", "web", "support")

LABEL_SOURCES: tuple[str, ...] = ("review", "chargeback", "issuer_report", "dispute")
REVIEW, CHARGEBACK, ISSUER_REPORT, DISPUTE = range(4)

# Kinds of account; opportunists look like ordinary users and abuse now and then. Band
# abusers and exploiters are ordinary accounts too; burst accounts are opened in groups.
HONEST, OPPORTUNIST, SERIAL, RING, FAKE_BUYER, BAND_ABUSER, EXPLOITER, BURST = range(8)


def streams(seed: int, names: tuple[str, ...]) -> dict[str, np.random.Generator]:
    """One independent generator per stage, so that a change in one stage leaves the
    random draws of the others unchanged."""
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {
        name: np.random.Generator(np.random.PCG64(child))
        for name, child in zip(names, children, strict=True)
    }


def uniform_seconds(
    rng: np.random.Generator,
    low: Array | float,
    high: Array | float,
    size: int | None = None,
) -> Array:
    """Whole seconds drawn uniformly in ``[low, high)`` (element-wise, broadcast to ``size``)."""
    low_a = np.asarray(low, dtype=np.float64)
    high_a = np.asarray(high, dtype=np.float64)
    shape = np.broadcast_shapes(low_a.shape, high_a.shape, () if size is None else (size,))
    return np.floor(low_a + rng.random(shape) * (high_a - low_a)).astype(np.int64)


def lognormal_seconds(rng: np.random.Generator, median: float, sigma: float, size: int) -> Array:
    """Whole, positive seconds of a log-normal delay with the given median."""
    delay = rng.lognormal(np.log(median), sigma, size)
    return np.maximum(1, np.rint(delay)).astype(np.int64)


def choice_codes(rng: np.random.Generator, weights: tuple[float, ...] | Array, size: int) -> Array:
    """Integer codes ``0..len(weights)-1`` drawn with the given weights."""
    w = np.asarray(weights, dtype=np.float64)
    cumulative = np.cumsum(w / w.sum())
    codes = np.searchsorted(cumulative, rng.random(size), side="right")
    return np.minimum(codes, len(w) - 1).astype(np.int64)


def id_width(count: int, minimum: int) -> int:
    """Digits needed for ``count`` identifiers, never fewer than ``minimum``."""
    return max(minimum, len(str(max(count - 1, 0))))


def format_ids(prefix: str, numbers: Array, width: int) -> pd.Series:
    """Readable identifiers such as ``o00001234``, as a ``str`` Series."""
    digits = pd.Series(np.asarray(numbers, dtype=np.int64)).astype(str).str.zfill(width)
    return (prefix + digits).astype("str")


def dotted_quads(numbers: Array) -> pd.Series:
    """IPv4 addresses (``a.b.c.d``) of 32-bit integers, as a ``str`` Series."""
    n = np.asarray(numbers, dtype=np.int64)
    parts = [pd.Series((n >> shift) & 0xFF).astype(str) for shift in (24, 16, 8, 0)]
    return (parts[0] + "." + parts[1] + "." + parts[2] + "." + parts[3]).astype("str")


def take_ids(ids: pd.Series, index: Array) -> pd.Series:
    """``ids[index]`` with ``MISSING`` giving a null, as a fresh ``str`` Series."""
    index = np.asarray(index, dtype=np.int64)
    missing = index < 0
    taken = pd.Series(ids.array.take(np.where(missing, 0, index)))
    if missing.any():
        taken = taken.mask(pd.Series(missing))
    return taken.astype("str")


def timestamps(seconds: Array) -> pd.Series:
    """``datetime64[us, UTC]`` of epoch seconds, ``MISSING`` giving ``NaT``."""
    seconds = np.asarray(seconds, dtype=np.int64)
    values = seconds.astype("datetime64[s]").astype("datetime64[us]")
    values[seconds < 0] = np.datetime64("NaT")
    return pd.Series(values).dt.tz_localize("UTC")
