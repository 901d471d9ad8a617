"""Splits by time, never at random: a model is always judged on requests after its data.

>>> import numpy as np
>>> split = time_split(np.arange(100), {"train": 0.6, "valid": 0.2, "test": 0.2})
>>> [int(m.sum()) for m in split.masks.values()]
[60, 20, 20]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from riskmodel.errors import DataError
from riskmodel.units import DAY

__all__ = ["PrequentialWindow", "TimeSplit", "prequential_windows", "time_split"]


@dataclass(frozen=True)
class TimeSplit:
    """Consecutive periods: ``bounds[name] = (start, end)`` in microseconds, end exclusive."""

    bounds: dict[str, tuple[int, int]]
    masks: dict[str, np.ndarray]


def time_split(times: np.ndarray, fractions: Mapping[str, float]) -> TimeSplit:
    """Cut ``times`` into consecutive periods holding about the given shares of requests.

    Periods follow the order of ``fractions``; a period of share 0 is empty. Requests at
    the same instant fall in the same period, so a cut never splits a burst.
    """
    if not len(times):
        raise DataError("nothing to split: no requests")
    shares = np.array(list(fractions.values()), dtype=float)
    if (shares < 0).any() or not np.isclose(shares.sum(), 1.0):
        raise DataError(f"split shares must be >= 0 and sum to 1, got {dict(fractions)}")
    ordered = np.sort(times)
    cuts = [int(ordered[0])]
    for share in np.cumsum(shares)[:-1]:
        index = min(round(share * len(ordered)), len(ordered) - 1)
        cuts.append(int(ordered[index]) if share < 1 else int(ordered[-1]) + 1)
    cuts.append(int(ordered[-1]) + 1)
    bounds: dict[str, tuple[int, int]] = {}
    masks: dict[str, np.ndarray] = {}
    for i, name in enumerate(fractions):
        start, end = cuts[i], max(cuts[i], cuts[i + 1])
        if shares[i] == 0:
            end = start
        bounds[name] = (start, end)
        masks[name] = (times >= start) & (times < end)
    return TimeSplit(bounds=bounds, masks=masks)


@dataclass(frozen=True)
class PrequentialWindow:
    """Train as of ``until``; test on requests in [``test_start``, ``test_end``)."""

    until: int
    test_start: int
    test_end: int


def prequential_windows(
    first_until: int, last_end: int, test_days: float, gap_days: float, count: int
) -> list[PrequentialWindow]:
    """``count`` successive windows, the last test period ending at ``last_end``.

    Each model is trained as of ``until``, then tested ``gap_days`` later for
    ``test_days``; windows advance by ``test_days`` so the test periods do not overlap.
    """
    step = int(test_days * DAY)
    gap = int(gap_days * DAY)
    if count < 1 or step <= 0:
        raise DataError("prequential evaluation needs at least one window of positive length")
    windows = []
    for k in range(count):
        test_end = last_end - (count - 1 - k) * step
        test_start = test_end - step
        until = test_start - gap
        if until <= first_until:
            raise DataError(
                f"{count} windows of {test_days:g} days (gap {gap_days:g}) "
                "do not fit in the history"
            )
        windows.append(PrequentialWindow(until=until, test_start=test_start, test_end=test_end))
    return windows
