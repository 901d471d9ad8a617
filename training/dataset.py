"""Training and evaluation examples: features and outcomes, each as known at a cutoff.

Two rules keep training from seeing the future:

- **As of a date** (``as_of``): a history cut at ``until`` holds only what was known
  before it: users registered, orders paid, usage, refund requests, decisions and labels
  (by ``labeled_at``) strictly before ``until``; an order's delivery or redemption at or
  after ``until`` is not known yet, so it is null.
- **Labels as they arrive** (``LabelPolicy``, ``training_examples``): a verdict known
  before ``until`` is a fact whatever the request's age, so every request with one is an
  example, labelled by the latest verdict known then (a double dip first reviewed as
  honest is honest until its chargeback arrives). Silence is not a verdict: a request
  without one counts as honest only once it is older than the **label maturity**
  (``maturity_days``), when most abuse would have been reported; a younger one is left
  out. With ``unlabelled="drop"`` no request without a verdict is an example.

The maturity is given, or estimated from the verdicts known at the cutoff
(``estimate_maturity``): the time by which a share (default 90 %) of abuse verdicts have
arrived, corrected for the verdicts recent requests have not had time to receive, within
``MATURITY_BOUNDS``.

**What each period judges on** (``periods``). A request older than the maturity has a
*settled* outcome: its verdict, or honest by silence. A younger one is an example only if
a verdict on it is known, so among young requests the examples are the judged ones:
reviews are asked for suspicious requests and chargebacks only ever say abuse, so their
abuse rate is several times the true one (on the sample as of 1 April with a 30-day
maturity, 25 % of the young examples against 4.5 % of the settled ones). Hence:

- train, valid, calibration and test are cut on the settled requests only, consecutive
  in time and each holding its share of them, so every request in them counts as it
  would in service. Calibration and test must see the population the model will score:
  on the judged young requests the probabilities would come out inflated and the test
  figures flattered by easy, already-suspected cases. Valid only picks the number of
  trees and could take either; settled requests keep it a steady early-stopping signal.
- The young requests with a verdict come after all four (period ``fresh``) and go to the
  trees only, with the train period: the newest abuse the reviewers have found is what
  the trees most need to learn, and the base rate they take from these judged requests
  is put right by the calibration, fitted on settled ones. Cutting all examples into the
  four periods instead would put them in calibration and test, the latest periods, where
  they could only be left out (teaching nothing) or bias both.

So the trees see requests later than the calibration and test periods, though never a
verdict given after ``until`` nor a request of those periods: the test figures are those
of a held-out recent period rather than of a forecast. A forecast is ``riskmodel
evaluate`` or ``prequential`` on a later period. On the simulator the held-out test
gained no more from the fresh verdicts than a later period did (docs/training.md).

Features are point in time by construction (``features.build_features``), so the
features of a request before ``until`` are the same whether or not the later history is
there; cutting the history anyway makes ``--until`` a faithful replay of that day.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import features
from features import FeatureBuilder, History
from riskmodel.errors import DataError
from riskmodel.units import DAY, iso
from training.splits import TimeSplit, time_split

__all__ = [
    "FRESH",
    "MATURITY_BOUNDS",
    "Examples",
    "LabelPolicy",
    "MaturityEstimate",
    "SourceDelays",
    "as_of",
    "estimate_maturity",
    "evaluation_examples",
    "fresh_weights",
    "latest_labels",
    "latest_time",
    "load_ground_truth",
    "periods",
    "training_examples",
]

FRESH = "fresh"
"""The period of requests younger than the maturity that are examples for their verdict."""
MATURITY_BOUNDS = (1.0, 120.0)
"""The range (days) an estimated label maturity is kept within."""
_UNLABELLED = ("honest", "drop")


@dataclass(frozen=True)
class LabelPolicy:
    """How outcomes become training labels (see the module docstring).

    ``maturity_days``: how old a request without a verdict must be to count as honest;
    None estimates it from the labels known at the cutoff (``estimate_maturity``, at
    ``maturity_quantile``). ``unlabelled``: ``honest`` (mature requests without a
    verdict) or ``drop`` (only requests with a verdict are examples).
    """

    maturity_days: float | None = None
    unlabelled: str = "honest"
    maturity_quantile: float = 0.9

    def __post_init__(self) -> None:
        if self.maturity_days is not None and not self.maturity_days >= 0:
            raise DataError(f"maturity_days must not be negative, got {self.maturity_days}")
        if self.unlabelled not in _UNLABELLED:
            raise DataError(f"unlabelled must be one of {_UNLABELLED}, got {self.unlabelled!r}")
        if not 0 < self.maturity_quantile <= 1:
            raise DataError(f"maturity_quantile must be in (0, 1], got {self.maturity_quantile}")


# Below this many abuse verdicts a delay quantile is mostly noise; the estimate says so.
FEW_VERDICTS = 30


@dataclass(frozen=True)
class SourceDelays:
    """Delays from a request to its first verdict from one source (days)."""

    source: str
    verdicts: int  # requests with a verdict from this source known at the cutoff
    abusive: int  # of which the first verdict from the source said abuse
    median_days: float
    quantile_days: float  # at the estimate's quantile


@dataclass(frozen=True)
class MaturityEstimate:
    """The label maturity chosen from the delays of the verdicts known at a cutoff.

    ``days`` is the chosen maturity: the ``quantile`` of the delays from a request to its
    first abuse verdict (``estimated_days``), within ``bounds``; with no abuse verdict at
    all, the upper bound. ``sources`` gives the delays of each label source.
    """

    days: float
    quantile: float
    estimated_days: float | None
    abusive: int  # requests with an abuse verdict known at the cutoff
    bounds: tuple[float, float]
    until: str
    sources: tuple[SourceDelays, ...]

    def describe(self) -> str:
        """One line: the maturity, why, and the delays per source."""
        share = f"{self.quantile:.0%}"
        if self.estimated_days is None:
            why = (
                f"no abuse verdict known before {self.until}: the upper bound, since nothing "
                "shows how late abuse becomes known"
            )
        else:
            why = f"estimated: {share} of abuse verdicts arrive within it, n={self.abusive:,}"
            if self.abusive < FEW_VERDICTS:
                why += " (too few to trust: give --maturity-days)"
            low, high = self.bounds
            if self.estimated_days < low:
                why += f"; {self.estimated_days:.1f} d raised to the lower bound"
            elif self.estimated_days > high:
                why += f"; {self.estimated_days:.1f} d cut to the upper bound"
        tag = f"p{self.quantile * 100:g}"
        per_source = ", ".join(
            f"{s.source} {tag} {s.quantile_days:.1f} d n={s.verdicts:,}" for s in self.sources
        )
        return f"label maturity {self.days:.1f} days ({why}" + (
            f"; {per_source})" if per_source else ")"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sources": [asdict(s) for s in self.sources]}


@dataclass(frozen=True)
class Examples:
    """Requests with their features and outcome, in time order.

    ``label`` is 1 for abuse and 0 for honest; ``labelled`` says whether a verdict was
    known (else the request counts as honest). ``mature`` says whether the request was
    old enough at the cutoff for its outcome to be settled (None: every one is);
    ``maturity_days`` and ``maturity`` record the maturity used and, when it was
    estimated, how. ``truth`` and ``pattern`` come from the simulator's ground truth when
    there is one (None otherwise).
    """

    features: pd.DataFrame
    label: np.ndarray
    labelled: np.ndarray
    requested_at: np.ndarray
    amount: np.ndarray
    truth: np.ndarray | None = None
    pattern: np.ndarray | None = None
    mature: np.ndarray | None = None
    maturity_days: float | None = None
    maturity: MaturityEstimate | None = None

    def __len__(self) -> int:
        return len(self.label)

    @property
    def request_ids(self) -> pd.Index:
        return self.features.index

    @property
    def settled(self) -> np.ndarray:
        """Whether each request's outcome is settled (mature at the cutoff)."""
        if self.mature is None:
            return np.ones(len(self.label), dtype=bool)
        return self.mature

    def subset(self, mask: np.ndarray) -> Examples:
        return replace(
            self,
            features=self.features.loc[mask],
            label=self.label[mask],
            labelled=self.labelled[mask],
            requested_at=self.requested_at[mask],
            amount=self.amount[mask],
            truth=None if self.truth is None else self.truth[mask],
            pattern=None if self.pattern is None else self.pattern[mask],
            mature=None if self.mature is None else self.mature[mask],
        )

    def target(self) -> np.ndarray:
        """What evaluation judges against: the ground truth if known, else the labels."""
        return self.label if self.truth is None else self.truth.astype(np.int8)

    def with_ground_truth(self, truth: pd.DataFrame) -> Examples:
        """Attach ``ground_truth.parquet`` rows (request_id, is_abuse, pattern)."""
        by_id = truth.set_index("request_id")
        missing = self.request_ids.difference(by_id.index)
        if len(missing):
            raise DataError(
                f"ground truth has no row for {len(missing)} requests, e.g. {missing[0]!r}"
            )
        rows = by_id.loc[self.request_ids]
        return replace(
            self,
            truth=rows["is_abuse"].to_numpy(dtype=bool),
            pattern=rows["pattern"].astype(str).to_numpy(dtype=object),
        )


def latest_time(history: History) -> int:
    """The time of the latest event in ``history`` (microseconds): "now" for that data."""
    candidates = [
        pd.to_numeric(table[column]).max()
        for table, column in (
            (history.refund_requests, "requested_at"),
            (history.orders, "paid_at"),
            (history.labels, "labeled_at"),
        )
        if len(table)
    ]
    if not candidates:
        raise DataError("the history has no refund requests, orders or labels")
    return int(max(candidates))


def as_of(history: History, until: int) -> History:
    """``history`` as it was known just before ``until`` (store microseconds): later rows
    left out, and what happened to earlier ones from ``until`` on (a delivery, the issuer's
    word, a refund's outcome) not yet known."""

    def before(table: pd.DataFrame, column: str) -> pd.DataFrame:
        keep = (pd.to_numeric(table[column]) < until).to_numpy(dtype=bool, na_value=False)
        if keep.all():  # a copy would cost time and nothing else
            return table
        return table[keep].reset_index(drop=True)

    def unknown(
        table: pd.DataFrame, original: pd.DataFrame, hidden: dict[str, tuple[str, ...]]
    ) -> pd.DataFrame:
        """``table`` with each time's ``hidden`` columns null where the time is ``until``
        or later (copied once, and only if it is still the caller's ``original``)."""
        for time, columns in hidden.items():
            if time not in table.columns:
                continue
            later = (pd.to_numeric(table[time]) >= until).to_numpy(dtype=bool, na_value=False)
            if later.any():
                table = table.copy() if table is original else table
                for column in columns:
                    table[column] = table[column].where(~later)
        return table

    issuer = ("delivered_at", "redeemed_at", "credited_at", "activation_failed_at")
    orders = unknown(before(history.orders, "paid_at"), history.orders, {c: (c,) for c in issuer})
    # An outcome is its amount and its time together: while one is unknown, both are.
    requests = unknown(
        before(history.refund_requests, "requested_at"),
        history.refund_requests,
        {"resolved_at": ("paid_amount", "resolved_at")},
    )
    return history.replace(
        users=before(history.users, "registered_at"),
        orders=orders,
        usage=before(history.usage, "used_at"),
        refund_requests=requests,
        labels=before(history.labels, "labeled_at"),
        decisions=before(history.decisions, "decided_at"),
    )


def latest_labels(labels: pd.DataFrame, until: int | None = None) -> pd.Series:
    """Per request id, the latest verdict (bool) known before ``until`` (all if None)."""
    if until is not None:
        labels = labels[(pd.to_numeric(labels["labeled_at"]) < until).to_numpy(dtype=bool)]
    if len(labels) == 0:
        return pd.Series([], dtype=bool, index=pd.Index([], dtype=object, name="request_id"))
    ordered = labels.assign(_t=pd.to_numeric(labels["labeled_at"])).sort_values(
        ["request_id", "_t"], kind="stable"
    )
    last = ordered.groupby("request_id", sort=False).tail(1)
    verdict = last["is_abuse"].astype(bool).to_numpy()
    return pd.Series(verdict, index=pd.Index(last["request_id"].astype(object), name="request_id"))


def estimate_maturity(
    history: History,
    until: int | None = None,
    quantile: float = 0.9,
    bounds: tuple[float, float] = MATURITY_BOUNDS,
) -> MaturityEstimate:
    """The label maturity the verdicts known before ``until`` call for.

    The delay of a request's outcome is the time from the request to its first abuse
    verdict; the maturity is the ``quantile`` of these delays (by default 90 % of abuse
    verdicts arrive within it), kept within ``bounds`` (days). With no abuse verdict
    known, it is the upper bound: nothing shows how late abuse becomes known, and the
    longer wait counts the fewest abusive requests as honest.

    Recent requests have had less time to receive a verdict (a chargeback 40 days after
    a request 10 days old has not arrived yet), so the delays seen at a cutoff are too
    short on the whole. Each delay is therefore weighted by the inverse of the number of
    requests old enough to have shown it (the requests that old when ``until`` came):
    a long delay, visible only on the oldest requests, stands for the recent requests
    whose verdict is still on its way. This assumes requests and their verdicts arrive at
    a steady rate over the history.

    >>> estimate = estimate_maturity(history, to_micros("2026-04-01"))  # doctest: +SKIP
    >>> print(estimate.describe())                                     # doctest: +SKIP
    label maturity 17.0 days (estimated: 90% of abuse verdicts arrive within it, n=227; ...)
    """
    if not 0 < quantile <= 1:
        raise DataError(f"the maturity quantile must be in (0, 1], got {quantile}")
    low, high = bounds
    if not 0 <= low <= high:
        raise DataError(f"maturity bounds must be 0 <= low <= high days, got {bounds}")
    until = latest_time(history) + 1 if until is None else until
    requests = history.refund_requests
    requested = pd.to_numeric(requests["requested_at"]).to_numpy(dtype=np.int64)
    requested = requested[requested < until]
    ages = np.sort((until - requested) / DAY)
    labels = history.labels
    labels = labels[(pd.to_numeric(labels["labeled_at"]) < until).to_numpy(dtype=bool)]
    at = pd.Series(pd.to_numeric(requests["requested_at"]).to_numpy(dtype=np.int64))
    at.index = pd.Index(requests["request_id"].astype(object))
    asked = at.reindex(labels["request_id"].astype(object).to_numpy()).to_numpy(dtype=float)
    source = labels["source"] if "source" in labels.columns else pd.Series(None, index=labels.index)
    delays = pd.DataFrame(
        {
            "request_id": labels["request_id"].astype(object).to_numpy(),
            "source": source.astype(object).where(source.notna(), "unknown").to_numpy(),
            "is_abuse": labels["is_abuse"].astype(bool).to_numpy(),
            "days": (pd.to_numeric(labels["labeled_at"]).to_numpy(dtype=float) - asked) / DAY,
        }
    ).dropna(subset=["days"])
    delays["days"] = delays["days"].clip(lower=0.0)

    sources = []
    first = delays.sort_values("days", kind="stable").drop_duplicates(["request_id", "source"])
    for name, rows in first.groupby("source", sort=True):
        seen = rows["days"].to_numpy(dtype=float)
        sources.append(
            SourceDelays(
                source=str(name),
                verdicts=len(seen),
                abusive=int(rows["is_abuse"].sum()),
                median_days=_delay_quantile(seen, ages, 0.5),
                quantile_days=_delay_quantile(seen, ages, quantile),
            )
        )
    sources.sort(key=lambda s: (s.quantile_days, s.source))
    abuse = delays[delays["is_abuse"]].groupby("request_id", sort=False)["days"].min()
    estimated = None
    days = float(high)
    if len(abuse):
        estimated = _delay_quantile(abuse.to_numpy(dtype=float), ages, quantile)
        days = min(max(estimated, low), high)
    return MaturityEstimate(
        days=days,
        quantile=quantile,
        estimated_days=estimated,
        abusive=len(abuse),
        bounds=(float(low), float(high)),
        until=iso(until),
        sources=tuple(sources),
    )


def _delay_quantile(days: np.ndarray, ages: np.ndarray, q: float) -> float:
    """The ``q`` quantile of delays ``days``, each weighted by the inverse of the number
    of requests old enough to have shown it (``ages``: every request's age, sorted)."""
    older = len(ages) - np.searchsorted(ages, days, side="left")
    weight = 1.0 / np.maximum(older, 1)
    order = np.argsort(days, kind="stable")
    cumulative = np.cumsum(weight[order])
    # The first delay whose cumulative weight reaches q; the margin absorbs rounding, so
    # equal weights give numpy's "inverted_cdf" quantile.
    index = np.searchsorted(cumulative, q * cumulative[-1] * (1 - 1e-12), side="left")
    return float(days[order][min(index, len(days) - 1)])


def _examples(
    history: History,
    requests: pd.DataFrame,
    verdicts: pd.Series,
    unlabelled: str,
    mature_before: int | None = None,
    build: FeatureBuilder = features.build_features,
) -> Examples:
    requests = requests.sort_values("requested_at", kind="stable").reset_index(drop=True)
    ids = requests["request_id"].astype(object)
    known = verdicts.reindex(ids.to_numpy())
    labelled = known.notna().to_numpy()
    if unlabelled == "drop":
        requests, ids, known = requests[labelled], ids[labelled], known[labelled]
        labelled = labelled[labelled]
    table = build(history, requests.reset_index(drop=True))
    label = np.zeros(len(requests), dtype=np.int8)
    label[labelled] = known.to_numpy(dtype=object)[labelled].astype(bool)
    requested_at = pd.to_numeric(requests["requested_at"]).to_numpy(dtype=np.int64)
    return Examples(
        features=table[features.model_features()],
        label=label,
        labelled=labelled,
        requested_at=requested_at,
        amount=pd.to_numeric(requests["amount"]).to_numpy(dtype=float) / 100,
        mature=None if mature_before is None else requested_at < mature_before,
    )


def training_examples(
    history: History,
    until: int | None = None,
    policy: LabelPolicy | None = None,
    build: FeatureBuilder = features.build_features,
) -> Examples:
    """The requests known before ``until`` (default: the history's end) that are examples
    then, each labelled as known then (see the module docstring): those with a verdict,
    whatever their age, and, unless ``policy.unlabelled`` is ``drop``, those without one
    that are older than the label maturity (as honest). With ``policy.maturity_days``
    None, the maturity is estimated from the verdicts known then (``estimate_maturity``).
    ``build`` computes the features (``features.dask.OnCluster`` on a Dask cluster).
    """
    policy = policy or LabelPolicy()
    until = latest_time(history) + 1 if until is None else until
    known = as_of(history, until)
    estimate = None
    maturity = policy.maturity_days
    if maturity is None:
        estimate = estimate_maturity(known, until, policy.maturity_quantile)
        maturity = estimate.days
    cutoff = until - int(maturity * DAY)
    requests = known.refund_requests
    times = pd.to_numeric(requests["requested_at"]).to_numpy(dtype=np.int64)
    if not (times < cutoff).any():
        why = f": {estimate.describe()}" if estimate else ""
        raise DataError(
            f"no refund request is mature before {iso(until)} with a maturity of "
            f"{maturity:g} days (requests must be before {iso(cutoff)}){why}"
        )
    verdicts = latest_labels(known.labels)
    judged = requests["request_id"].astype(object).isin(verdicts.index).to_numpy()
    keep = judged | (times < cutoff) if policy.unlabelled == "honest" else judged
    examples = _examples(known, requests[keep], verdicts, policy.unlabelled, cutoff, build)
    return replace(examples, maturity_days=float(maturity), maturity=estimate)


def periods(examples: Examples, shares: Mapping[str, float]) -> TimeSplit:
    """The consecutive periods of a training run, and what each judges on.

    The requests whose outcome is settled (``examples.settled``) are cut by time into the
    periods named in ``shares`` (train, valid, calibration, test), each holding about its
    share of them; after them comes ``fresh``: the requests younger than the maturity,
    examples only because a verdict on them is known. Every mask is over all
    ``examples``; the module docstring says why only the trees learn from ``fresh``.

    >>> split = periods(examples, TrainConfig().shares)              # doctest: +SKIP
    >>> list(split.masks)
    ['train', 'valid', 'calibration', 'test', 'fresh']
    """
    settled = examples.settled
    if not settled.any():
        raise DataError(
            "no example has a settled outcome (a request older than the label maturity): "
            "use more history or a shorter maturity"
        )
    rows = np.flatnonzero(settled)
    within = time_split(examples.requested_at[rows], shares)
    bounds = dict(within.bounds)
    masks: dict[str, np.ndarray] = {}
    for name, mask in within.masks.items():
        masks[name] = np.zeros(len(examples), dtype=bool)
        masks[name][rows[mask]] = True
    masks[FRESH] = ~settled
    end = max(end for _, end in bounds.values())
    fresh_times = examples.requested_at[~settled]
    if len(fresh_times):
        if fresh_times.min() < end:
            raise DataError("requests younger than the maturity come before settled ones")
        bounds[FRESH] = (int(fresh_times.min()), int(fresh_times.max()) + 1)
    else:
        bounds[FRESH] = (end, end)
    return TimeSplit(bounds=bounds, masks=masks)


def fresh_weights(examples: Examples, split: TimeSplit) -> np.ndarray:
    """A weight per example: 1, except the fresh period's abusive verdicts, weighted down
    so that the fresh period's weighted abuse share is the train period's share.

    Young requests have a verdict mostly when they are abusive: an honest one is often
    known honest only by its silence, once mature. Taken at full weight, the fresh
    verdicts teach the trees that whatever young requests share (larger all-history
    counts, to begin with) means abuse; where every fresh verdict is abuse (chargebacks
    the only source) their weight is 0. Chosen on the development worlds
    (``benchmarks/quality.py --set dev``; docs/training.md).
    """
    weights = np.ones(len(examples))
    fresh = split.masks[FRESH]
    abusive = fresh & (examples.label == 1)
    found = int(abusive.sum())
    if found:
        # The train period's share: the later settled periods judge the model, unseen.
        share = float(examples.label[split.masks["train"]].mean())
        honest = int(fresh.sum()) - found
        weights[abusive] = min(1.0, share / (1 - share) * honest / found) if share < 1 else 1.0
    return weights


def evaluation_examples(
    history: History,
    since: int | None = None,
    until: int | None = None,
    labels_known_at: int | None = None,
    unlabelled: str = "honest",
) -> Examples:
    """Requests in [since, until) with point-in-time features from the whole history.

    Labels are the latest known before ``labels_known_at`` (default: every label there is).
    """
    times = pd.to_numeric(history.refund_requests["requested_at"])
    keep = np.ones(len(times), dtype=bool)
    if since is not None:
        keep &= (times >= since).to_numpy(dtype=bool)
    if until is not None:
        keep &= (times < until).to_numpy(dtype=bool)
    requests = history.refund_requests[keep]
    if len(requests) == 0:
        window = f"[{iso(since) if since else '-'}, {iso(until) if until else '-'})"
        raise DataError(f"no refund request in the evaluation period {window}")
    verdicts = latest_labels(history.labels, labels_known_at)
    return _examples(history, requests, verdicts, unlabelled)


def load_ground_truth(directory: str | Path) -> pd.DataFrame | None:
    """The simulator's ``ground_truth.parquet`` in a dataset directory, if there is one."""
    path = Path(directory) / "ground_truth.parquet"
    if not path.is_file():
        return None
    truth = pd.read_parquet(path)
    for column in ("request_id", "is_abuse", "pattern"):
        if column not in truth.columns:
            raise DataError(f"{path}: column {column} is missing")
    truth["request_id"] = truth["request_id"].astype(object)
    return truth
