"""Honest second requests on an order: look-alikes of a duplicate refund that never pay
twice.

- ``honest_resubmission``: a buyer whose honest request was refused (paid nothing) asks
  again for the same, ``resubmission_rate`` of them, 12 h - 7 days after the refusal;
  mostly with the same reason, sometimes as ``other``.
- ``honest_partial_followup``: a buyer paid only part of a membership refund (prorated by
  the days elapsed, see ``outcomes``) asks for the unpaid remainder, ``partial_followup_rate``
  of them, 2 h - 7 days after the payment: all of it (70 %) or a part (30-90 %), so that
  what was paid and what is asked together stay within the first amount, and the price.
- ``honest_retry``: the refund pipeline, getting no answer, sends a request again under a
  new request_id (``retry_rate`` of every request), 5 s - 30 min later (median 90 s),
  with the same order, user, amount, reason, claim, device, IP and channel. The first is
  never answered; the retry gets the answer the first would have had, as much later as it
  was sent later. A retry of an abusive request is the same abuse and keeps its pattern.

Only honest requests are asked again after a refusal or a part payment (abusers move
on); a duplicate refund (``abuse``) is asked again after a full payment.

    >>> import numpy as np
    >>> from riskmodel.simulator.lookalikes import retry_gap
    >>> gap = retry_gap(np.random.default_rng(0), 1_000)
    >>> bool((gap >= 5).all() and (gap <= 1_800).all())
    True
"""

from __future__ import annotations

import numpy as np

from riskmodel.simulator.common import (
    DAY,
    HOUR,
    MEMBERSHIP,
    MINUTE,
    MISSING,
    OTHER,
    Array,
    lognormal_seconds,
    uniform_seconds,
)
from riskmodel.simulator.config import SimulationConfig
from riskmodel.simulator.orders import Orders
from riskmodel.simulator.patterns import FIRST_ABUSE, Pattern
from riskmodel.simulator.requests import Requests

__all__ = ["followups", "retries", "retry_gap"]

# A remainder smaller than this (reporting currency) is not worth asking for again.
_SMALLEST_REMAINDER = 0.5
_WHOLE_REMAINDER_SHARE = 0.7
_SAME_REASON_SHARE = 0.75


def followups(
    requests: Requests, orders: Orders, cfg: SimulationConfig, rng: np.random.Generator
) -> tuple[Requests, Array]:
    """Re-submissions after a refusal and follow-ups after a part payment of the honest
    ``requests`` (whose outcomes are drawn), and the index of the request each follows.
    Requests at or after the end of the window are left out."""
    end = int(cfg.start.timestamp()) + cfg.days * DAY
    n = len(requests)
    r = rng.random((4, n))
    honest = requests.pattern < FIRST_ABUSE
    answered = requests.resolved >= 0
    refused = honest & answered & (requests.paid == 0)
    resubmitted = np.flatnonzero(refused & (r[0] < cfg.resubmission_rate))
    remainder = requests.amount - requests.paid
    member = orders.product_type[requests.order] == MEMBERSHIP
    part = honest & answered & member & (requests.paid > 0) & (remainder >= _SMALLEST_REMAINDER)
    followed = np.flatnonzero(part & (r[1] < cfg.partial_followup_rate))

    again = requests.take(resubmitted)
    again.requested = again.resolved + uniform_seconds(rng, 12 * HOUR, 7 * DAY, len(again))
    other = r[2][resubmitted] >= _SAME_REASON_SHARE
    again.reason = np.where(other, OTHER, again.reason)
    again.claimed = np.where(other, MISSING, again.claimed)
    again.pattern = np.full(len(again), Pattern.HONEST_RESUBMISSION.code, dtype=np.int64)

    more = requests.take(followed)
    more.requested = more.resolved + uniform_seconds(rng, 2 * HOUR, 7 * DAY, len(more))
    left = remainder[followed]
    share = rng.uniform(0.3, 0.9, len(more))
    whole = r[3][followed] < _WHOLE_REMAINDER_SHARE
    more.amount = np.where(whole, left, np.maximum(np.round(left * share, 2), 0.01))
    more.pattern = np.full(len(more), Pattern.HONEST_PARTIAL_FOLLOWUP.code, dtype=np.int64)

    asked = Requests.concat([again, more])
    asked.paid = np.full(len(asked), np.nan)
    asked.resolved = np.full(len(asked), MISSING, dtype=np.int64)
    parent = np.concatenate([resubmitted, followed]).astype(np.int64)
    keep = np.flatnonzero(asked.requested < end)
    return asked.take(keep), parent[keep]


def retry_gap(rng: np.random.Generator, n: int) -> Array:
    """Seconds between a request and the pipeline's retry of it: 5 s - 30 min, median 90 s."""
    gap: Array = np.clip(lognormal_seconds(rng, 90, 1.0, n), 5, 30 * MINUTE)
    return gap


def retries(
    requests: Requests, cfg: SimulationConfig, rng: np.random.Generator
) -> tuple[Requests, Array]:
    """The pipeline's retries of ``requests`` (whose outcomes are drawn), and the index of
    the request each repeats. A retried request is left unanswered (in place); a retry at
    or after the end of the window is left out, its first still unanswered."""
    end = int(cfg.start.timestamp()) + cfg.days * DAY
    chosen = np.flatnonzero(rng.random(len(requests)) < cfg.retry_rate)
    retry = requests.take(chosen)
    gap = retry_gap(rng, len(chosen))
    retry.requested = retry.requested + gap
    retry.resolved = np.where(retry.resolved >= 0, retry.resolved + gap, MISSING)
    retry.pattern = np.where(
        retry.pattern < FIRST_ABUSE, Pattern.HONEST_RETRY.code, retry.pattern
    ).astype(np.int64)
    requests.paid[chosen] = np.nan
    requests.resolved[chosen] = MISSING
    keep = np.flatnonzero(retry.requested < end)
    return retry.take(keep), chosen[keep]
