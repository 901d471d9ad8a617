"""Labels: late, partial and sometimes wrong verdicts on refund requests.

Only some requests are ever judged (``abuse_label_rate`` of abusive ones,
``honest_label_rate`` of honest ones), each verdict arrives after a delay that depends
on its source (review 1-5 days, issuer report 3-14, dispute 5-20, chargeback 20-60), and a
verdict is wrong with probability ``label_flip_rate`` (a dispute later corrects some of
the wrong ones). A double dip is first reviewed as honest, if at all, and then charged
back weeks later: the latest label known at a time is the one that counts then.
Verdicts that would arrive after the window are not known yet and are left out.

Worlds may change the regime: chargebacks on other abusive requests
(``abuse_chargeback_rate``; with no other verdict, a world of chargebacks only), or one
true verdict on every request a fixed number of days later (``fixed_label_delay_days``,
like a card-fraud benchmark).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from riskmodel.simulator.common import (
    BANK_CARD,
    CHARGEBACK,
    DAY,
    DISPUTE,
    ISSUER_REPORT,
    REVIEW,
    Array,
    uniform_seconds,
)
from riskmodel.simulator.config import SimulationConfig
from riskmodel.simulator.patterns import FIRST_ABUSE, Pattern

__all__ = ["Labels", "draw_labels"]


@dataclass(frozen=True)
class Labels:
    """One element per label; ``request`` indexes the requests it judges."""

    request: Array
    labeled_at: Array
    is_abuse: Array
    source: Array


def _delay(rng: np.random.Generator, source: Array, cfg: SimulationConfig) -> Array:
    ranges = np.array(
        [
            cfg.review_delay_days,
            cfg.chargeback_delay_days,
            cfg.issuer_report_delay_days,
            cfg.dispute_delay_days,
        ]
    )
    low, high = ranges[source, 0] * DAY, ranges[source, 1] * DAY
    return np.maximum(1, uniform_seconds(rng, low, high))


_ISSUER_CHECKED = (
    Pattern.HONEST_BAD_BATCH.code,
    Pattern.HONEST_INVALID_CODE.code,
    Pattern.HONEST_DOUBLE_SOLD.code,
    Pattern.HONEST_NOT_CREDITED.code,
)


def draw_labels(
    requested: Array,
    pattern: Array,
    cfg: SimulationConfig,
    rng: np.random.Generator,
    method: Array | None = None,
) -> Labels:
    """Labels of the requests with times ``requested`` and pattern codes ``pattern``;
    ``method`` is the payment method code of each request's order (needed only for
    ``abuse_chargeback_rate``)."""
    end = int(cfg.start.timestamp()) + cfg.days * DAY
    n = len(pattern)
    truth = pattern >= FIRST_ABUSE
    if cfg.fixed_label_delay_days > 0:
        return _fixed_delay_labels(requested, pattern, cfg)
    r = rng.random((6, n))
    dip = pattern == Pattern.DOUBLE_DIP.code
    labelled = dip | (r[0] < np.where(truth, cfg.abuse_label_rate, cfg.honest_label_rate))

    issuer = (pattern == Pattern.REDEEMED_THEN_INVALID.code) | (
        np.isin(pattern, _ISSUER_CHECKED) & (r[1] < cfg.issuer_report_share)
    )
    disputed = r[2] < np.where(truth, cfg.abuse_dispute_share, cfg.honest_dispute_share)
    source = np.where(issuer, ISSUER_REPORT, np.where(disputed, DISPUTE, REVIEW))
    source = np.where(dip, CHARGEBACK, source)

    first = np.flatnonzero(labelled)
    first_at = requested[first] + _delay(rng, source[first], cfg)
    wrong = r[3][first] < cfg.label_flip_rate
    first_verdict = truth[first] ^ wrong

    corrected = first[wrong & (r[4][first] < cfg.label_correction_rate)]
    corrected_at = first_at[wrong & (r[4][first] < cfg.label_correction_rate)]
    corrected_at = corrected_at + _delay(rng, np.full(len(corrected), DISPUTE), cfg)

    # Before the chargeback, a reviewer who looked at a double dip saw nothing wrong.
    early = np.flatnonzero(dip & (r[5] < cfg.honest_label_rate))
    early_at = requested[early] + _delay(rng, np.full(len(early), REVIEW), cfg)

    request = np.concatenate([first, corrected, early])
    labeled_at = np.concatenate([first_at, corrected_at, early_at])
    is_abuse = np.concatenate([first_verdict, truth[corrected], np.zeros(len(early), dtype=bool)])
    sources = np.concatenate(
        [source[first], np.full(len(corrected), DISPUTE), np.full(len(early), REVIEW)]
    )
    if cfg.abuse_chargeback_rate > 0:  # no draw otherwise: the default labels are unchanged
        if method is None:
            raise ValueError("abuse_chargeback_rate needs the payment method of each request")
        rate = np.where(method == BANK_CARD, 1.0, 0.1) * cfg.abuse_chargeback_rate
        charged = np.flatnonzero(truth & ~dip & (rng.random(n) < rate))
        charged_at = requested[charged] + _delay(rng, np.full(len(charged), CHARGEBACK), cfg)
        request = np.concatenate([request, charged])
        labeled_at = np.concatenate([labeled_at, charged_at])
        is_abuse = np.concatenate([is_abuse, np.ones(len(charged), dtype=bool)])
        sources = np.concatenate([sources, np.full(len(charged), CHARGEBACK)])
    known = labeled_at < end
    return Labels(
        request=request[known].astype(np.int64),
        labeled_at=labeled_at[known].astype(np.int64),
        is_abuse=is_abuse[known].astype(bool),
        source=sources[known].astype(np.int64),
    )


def _fixed_delay_labels(requested: Array, pattern: Array, cfg: SimulationConfig) -> Labels:
    """One true verdict per request, ``fixed_label_delay_days`` after it: a chargeback for
    a double dip, a review for everything else."""
    end = int(cfg.start.timestamp()) + cfg.days * DAY
    labeled_at = requested + round(cfg.fixed_label_delay_days * DAY)
    source = np.where(pattern == Pattern.DOUBLE_DIP.code, CHARGEBACK, REVIEW)
    known = np.flatnonzero(labeled_at < end)
    return Labels(
        request=known.astype(np.int64),
        labeled_at=labeled_at[known].astype(np.int64),
        is_abuse=(pattern[known] >= FIRST_ABUSE).astype(bool),
        source=source[known].astype(np.int64),
    )
