"""Training and evaluation examples: features and outcomes, each as known at a cutoff.

Two rules keep training from seeing the future:

- **As of a date** (``as_of``): a history cut at ``until`` holds only what was known
  before it: users registered, orders paid, usage, refund requests, decisions and labels
  (by ``labeled_at``) strictly before ``until``; an order's delivery or redemption at or
  after ``until`` is not known yet, so it is null.
- **Label maturity** (``LabelPolicy``): a request's outcome can still change for weeks (a
  chargeback arrives 20-60 days later), so a request is a training example only once
  ``maturity_days`` have passed between it and ``until``. Its label is the latest verdict
  known before ``until``; a mature request without any verdict counts as honest by
  default (most honest refunds are never reviewed), or is left out with
  ``unlabelled="drop"``.

Features are point in time by construction (``features.build_features``), so the
features of a request before ``until`` are the same whether or not the later history is
there; cutting the history anyway makes ``--until`` a faithful replay of that day.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

import features
from features import History
from riskmodel.errors import DataError

__all__ = [
    "DAY_US",
    "Examples",
    "LabelPolicy",
    "as_of",
    "evaluation_examples",
    "iso",
    "latest_labels",
    "latest_time",
    "load_ground_truth",
    "to_micros",
    "training_examples",
]

DAY_US = 86_400_000_000
_UNLABELLED = ("honest", "drop")


def to_micros(when: datetime | str | int | None) -> int | None:
    """A time as store microseconds (UTC); naive datetimes and ISO strings are UTC."""
    if when is None or isinstance(when, int):
        return when
    if isinstance(when, str):
        try:
            when = datetime.fromisoformat(when)
        except ValueError as exc:
            raise DataError(f"{when!r} is not an ISO 8601 date") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return round(when.timestamp() * 1_000_000)


def iso(micros: int | float) -> str:
    """Store microseconds as an ISO 8601 UTC timestamp."""
    return datetime.fromtimestamp(int(micros) / 1_000_000, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class LabelPolicy:
    """How outcomes become training labels (see the module docstring)."""

    maturity_days: float = 30.0
    unlabelled: str = "honest"

    def __post_init__(self) -> None:
        if self.maturity_days < 0:
            raise DataError(f"maturity_days must not be negative, got {self.maturity_days}")
        if self.unlabelled not in _UNLABELLED:
            raise DataError(f"unlabelled must be one of {_UNLABELLED}, got {self.unlabelled!r}")


@dataclass(frozen=True)
class Examples:
    """Requests with their features and outcome, in time order.

    ``label`` is 1 for abuse and 0 for honest; ``labelled`` says whether a verdict was
    known (else the request counts as honest). ``truth`` and ``pattern`` come from the
    simulator's ground truth when there is one (None otherwise).
    """

    features: pd.DataFrame
    label: np.ndarray
    labelled: np.ndarray
    requested_at: np.ndarray
    amount: np.ndarray
    truth: np.ndarray | None = None
    pattern: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.label)

    @property
    def request_ids(self) -> pd.Index:
        return self.features.index

    def subset(self, mask: np.ndarray) -> Examples:
        return Examples(
            features=self.features.loc[mask],
            label=self.label[mask],
            labelled=self.labelled[mask],
            requested_at=self.requested_at[mask],
            amount=self.amount[mask],
            truth=None if self.truth is None else self.truth[mask],
            pattern=None if self.pattern is None else self.pattern[mask],
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
    """``history`` as it was known just before ``until`` (store microseconds)."""

    def before(table: pd.DataFrame, column: str) -> pd.DataFrame:
        keep = (pd.to_numeric(table[column]) < until).to_numpy(dtype=bool, na_value=False)
        if keep.all():  # a copy would cost time and nothing else
            return table
        return table[keep].reset_index(drop=True)

    orders = before(history.orders, "paid_at")
    for column in ("delivered_at", "redeemed_at"):
        later = (pd.to_numeric(orders[column]) >= until).to_numpy(dtype=bool, na_value=False)
        if later.any():
            orders = orders.copy() if orders is history.orders else orders
            orders[column] = orders[column].where(~later)
    return history.replace(
        users=before(history.users, "registered_at"),
        orders=orders,
        usage=before(history.usage, "used_at"),
        refund_requests=before(history.refund_requests, "requested_at"),
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


def _examples(
    history: History, requests: pd.DataFrame, verdicts: pd.Series, unlabelled: str
) -> Examples:
    requests = requests.sort_values("requested_at", kind="stable").reset_index(drop=True)
    ids = requests["request_id"].astype(object)
    known = verdicts.reindex(ids.to_numpy())
    labelled = known.notna().to_numpy()
    if unlabelled == "drop":
        requests, ids, known = requests[labelled], ids[labelled], known[labelled]
        labelled = labelled[labelled]
    table = features.build_features(history, requests.reset_index(drop=True))
    label = np.zeros(len(requests), dtype=np.int8)
    label[labelled] = known.to_numpy(dtype=object)[labelled].astype(bool)
    return Examples(
        features=table[features.model_features()],
        label=label,
        labelled=labelled,
        requested_at=pd.to_numeric(requests["requested_at"]).to_numpy(dtype=np.int64),
        amount=pd.to_numeric(requests["amount"]).to_numpy(dtype=float) / 100,
    )


def training_examples(
    history: History, until: int | None = None, policy: LabelPolicy | None = None
) -> Examples:
    """Mature requests known before ``until`` (default: the history's end), labelled as
    known then (see the module docstring)."""
    policy = policy or LabelPolicy()
    until = latest_time(history) + 1 if until is None else until
    known = as_of(history, until)
    cutoff = until - int(policy.maturity_days * DAY_US)
    requests = known.refund_requests
    mature = requests[(pd.to_numeric(requests["requested_at"]) < cutoff).to_numpy(dtype=bool)]
    if len(mature) == 0:
        raise DataError(
            f"no refund request is mature before {iso(until)} with a maturity of "
            f"{policy.maturity_days:g} days (requests must be before {iso(cutoff)})"
        )
    return _examples(known, mature, latest_labels(known.labels), policy.unlabelled)


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
