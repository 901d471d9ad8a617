"""Drift of the live traffic away from what the champion was trained on.

A **reference** describes the end of the champion's training window (its requests in the
last ``REFERENCE_DAYS`` before ``training_window.until``): for every model input the share of
requests in each bin (numbers: bins between the deciles of the window's values; categories:
one bin per level) and the share missing, the score distribution (deciles of the window's
scores) and, when the store holds decisions of that time, the approve / review / block
shares by hour of day. The bundle keeps none of this (only the window's bounds and a
fingerprint of its data), so it is computed from the store's history with the offline
engine, once, and kept beside the bundle in the registry (``reference_path``).

The **live** side is the requests decided in a window (``decisions.decided_at``), or,
in a store without decisions (history loaded by ``riskmodel ingest`` alone), the requests
made in it. Their features are recomputed with the offline engine on the store's history
and scored by the champion: the service keeps neither the features it used nor, for every
request, a score from the same model, and recomputing them the same way on both sides
compares like with like. The point-in-time engines are proven equal, so the recomputed
features are what the service saw, except for history written after a decision but dated
before it (a late batch of orders), which the recomputation counts.

The comparison is the population stability index per input and for the score,
``sum((live - ref) * ln(live / ref))`` over the reference's bins with the missing values
as one more bin (empty bins count as 0.0001), and the change of each missing share.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

import features
from features import History
from riskmodel.bundle import CATEGORY, FeatureSpec, ModelBundle
from riskmodel.errors import DataError
from riskmodel.registry import Registry
from riskmodel.units import DAY, HOUR, iso, to_micros

__all__ = [
    "DECISIONS",
    "MAJOR",
    "MODERATE",
    "REFERENCE_DAYS",
    "REFERENCE_FILE",
    "Binned",
    "DecisionRates",
    "Drift",
    "DriftReport",
    "Reference",
    "band",
    "build_reference",
    "compare",
    "psi",
    "reference_for",
    "reference_path",
    "reference_start",
]

MODERATE = 0.1
MAJOR = 0.25
"""The usual PSI bands: below 0.1 stable, 0.1 to 0.25 a moderate shift, 0.25 and above a
major one."""

DECISIONS = ("approve", "review", "block")
REFERENCE_FILE = "monitor_reference.json"
REFERENCE_DAYS = 30.0
"""The reference covers the last 30 days of the training window: the traffic the model
was made closest to, and clear of the history's first weeks, where every count over a
window reaching back before the data began is too low (a store loaded with 120 days of
history sees its windowed counts grow for 90 of them)."""
_FORMAT = "refund-risk-monitor-reference/1"
_QUANTILES = np.linspace(0.1, 0.9, 9)
# An empty bin would make the index infinite; this is the customary floor.
_FLOOR = 1e-4


def band(value: float) -> str:
    """The PSI band's name."""
    if value >= MAJOR:
        return "major shift"
    if value >= MODERATE:
        return "moderate shift"
    return "stable"


def psi(reference: Sequence[float] | np.ndarray, live: Sequence[float] | np.ndarray) -> float:
    """Population stability index between two share vectors over the same bins."""
    ref = np.maximum(np.asarray(reference, dtype=float), _FLOOR)
    now = np.maximum(np.asarray(live, dtype=float), _FLOOR)
    return float(np.sum((now - ref) * np.log(now / ref)))


@dataclass(frozen=True)
class Binned:
    """One input's (or the score's) reference bins and the share of rows in each.

    Numbers: ``edges`` are the distinct deciles; bin ``i`` holds ``edges[i-1] < v <=
    edges[i]``, the first everything up to ``edges[0]``, the last everything above the last
    edge. Categories: one bin per level, in code order. ``shares`` end with the missing
    share, so a change in how often a value is missing moves the index too.
    """

    name: str
    kind: str
    edges: tuple[float, ...]
    levels: tuple[str, ...]
    shares: tuple[float, ...]

    @property
    def missing(self) -> float:
        return self.shares[-1]

    def shares_of(self, values: np.ndarray) -> np.ndarray:
        """Shares of ``values`` (codes for a category, NaN missing) in these bins."""
        bins = len(self.shares) - 1
        if len(values) == 0:
            return np.zeros(bins + 1)
        missing = np.isnan(values)
        if self.kind == CATEGORY:
            index = np.where(missing, bins, np.nan_to_num(values, nan=0.0)).astype(np.int64)
        else:
            index = np.searchsorted(np.asarray(self.edges), values, side="left")
            index = np.where(missing, bins, index)
        counts = np.bincount(index, minlength=bins + 1)
        shares: np.ndarray = counts / len(values)
        return shares

    def labels(self) -> list[str]:
        """A short name per bin, for plots."""
        if self.kind == CATEGORY:
            return [*self.levels, "missing"]
        edges = [f"{e:.4g}" for e in self.edges]
        if not edges:
            return ["all", "missing"]
        inner = [f"({a}, {b}]" for a, b in itertools.pairwise(edges)]
        return [f"<= {edges[0]}", *inner, f"> {edges[-1]}", "missing"]

    @classmethod
    def of(cls, name: str, values: np.ndarray, spec: FeatureSpec | None = None) -> Binned:
        """Bins fitted on ``values`` (codes for a category, NaN missing)."""
        if spec is not None and spec.type == CATEGORY:
            empty = cls(name, CATEGORY, (), spec.levels, (0.0,) * (len(spec.levels) + 1))
            return cls(name, CATEGORY, (), spec.levels, tuple(empty.shares_of(values)))
        known = values[~np.isnan(values)]
        edges = (
            tuple(float(e) for e in np.unique(np.quantile(known, _QUANTILES))) if len(known) else ()
        )
        empty = cls(name, "number", edges, (), (0.0,) * (len(edges) + 2))
        return cls(name, "number", edges, (), tuple(empty.shares_of(values)))


@dataclass(frozen=True)
class DecisionRates:
    """Decisions counted by outcome, overall and by hour of day (UTC)."""

    total: int
    counts: dict[str, int]
    by_hour: dict[int, dict[str, int]]
    without_score: int

    def share(self, decision: str) -> float:
        return self.counts.get(decision, 0) / self.total if self.total else float("nan")

    def hourly_share(self, decision: str) -> list[float]:
        out = []
        for hour in range(24):
            row = self.by_hour.get(hour, {})
            total = sum(row.values())
            out.append(row.get(decision, 0) / total if total else float("nan"))
        return out

    @classmethod
    def of(cls, decisions: pd.DataFrame) -> DecisionRates | None:
        """Rates of a frame of stored decisions; None when it is empty."""
        if decisions.empty:
            return None
        outcome = decisions["decision"].astype(str)
        hour = (pd.to_numeric(decisions["decided_at"]) // HOUR % 24).astype(int)
        by_hour: dict[int, dict[str, int]] = {}
        table = pd.crosstab(hour, outcome)
        for h, row in table.iterrows():
            by_hour[int(str(h))] = {str(d): int(n) for d, n in row.items() if n}
        return cls(
            total=len(decisions),
            counts={str(k): int(v) for k, v in outcome.value_counts().items()},
            by_hour=by_hour,
            without_score=int(decisions["score"].isna().sum()),
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DecisionRates:
        return cls(
            total=data["total"],
            counts=data["counts"],
            by_hour={int(h): row for h, row in data["by_hour"].items()},
            without_score=data["without_score"],
        )


@dataclass(frozen=True)
class Reference:
    """What the champion's training window looked like (see the module's docstring)."""

    model_version: str
    start: str
    until: str
    requests: int
    features: tuple[Binned, ...]
    score: Binned
    decisions: DecisionRates | None
    created_at: str

    def to_json(self) -> str:
        body = {"format": _FORMAT, **asdict(self)}
        return json.dumps(body, indent=1, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Reference:
        data = json.loads(text)
        if data.get("format") != _FORMAT:
            raise DataError(f"not a monitor reference of format {_FORMAT}")

        def binned(item: dict[str, Any]) -> Binned:
            return Binned(
                item["name"],
                item["kind"],
                tuple(item["edges"]),
                tuple(item["levels"]),
                tuple(item["shares"]),
            )

        rates = data["decisions"]
        return cls(
            model_version=data["model_version"],
            start=data["start"],
            until=data["until"],
            requests=data["requests"],
            features=tuple(binned(item) for item in data["features"]),
            score=binned(data["score"]),
            decisions=None if rates is None else DecisionRates.from_json(rates),
            created_at=data["created_at"],
        )


def _requests_between(history: History, since: int, until: int | None) -> pd.DataFrame:
    requests = history.refund_requests
    times = pd.to_numeric(requests["requested_at"])
    keep = times >= since
    if until is not None:
        keep &= times < until
    return requests[keep.to_numpy()].reset_index(drop=True)


def _decided_between(history: History, since: int, until: int | None) -> pd.DataFrame:
    decisions = history.decisions
    times = pd.to_numeric(decisions["decided_at"])
    keep = times >= since
    if until is not None:
        keep &= times < until
    return decisions[keep.to_numpy()].reset_index(drop=True)


def _inputs_and_scores(
    bundle: ModelBundle, history: History, requests: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """The model's inputs (categories as codes) and its scores, recomputed point in time."""
    frame = features.build_features(history, requests, names=list(bundle.feature_names))
    matrix = bundle.matrix(frame)
    scores = bundle.score(frame) if len(frame) else np.empty(0)
    return matrix, np.asarray(scores, dtype=float)


def reference_start(bundle: ModelBundle, days: float | None = REFERENCE_DAYS) -> int:
    """Where the reference begins: ``days`` before the end of the training window, or at
    its start (``None``, or when the window is shorter)."""
    window = bundle.training_window
    start, until = to_micros(window.start), to_micros(window.until)
    assert start is not None
    assert until is not None
    return start if days is None else max(start, until - round(days * DAY))


def build_reference(
    bundle: ModelBundle, history: History, days: float | None = REFERENCE_DAYS
) -> Reference:
    """The reference of ``bundle``'s training window (its last ``days``), from ``history``."""
    window = bundle.training_window
    since, until = reference_start(bundle, days), to_micros(window.until)
    assert until is not None
    requests = _requests_between(history, since, until)
    if requests.empty:
        raise DataError(
            f"the history holds no refund request in model {bundle.version}'s training "
            f"window [{window.start}, {window.until}): load the history it was trained on "
            "into the store first"
        )
    matrix, scores = _inputs_and_scores(bundle, history, requests)
    binned = tuple(
        Binned.of(spec.name, matrix[:, j], spec) for j, spec in enumerate(bundle.features)
    )
    return Reference(
        model_version=bundle.version,
        start=iso(since),
        until=window.until,
        requests=len(requests),
        features=binned,
        score=Binned.of("score", scores),
        decisions=DecisionRates.of(_decided_between(history, since, until)),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def reference_path(registry: Registry, version: str) -> Path:
    """Where a version's reference is kept: beside its bundle."""
    return registry.bundle_path(version).parent / REFERENCE_FILE


def reference_for(
    registry: Registry,
    bundle: ModelBundle,
    history: History,
    days: float | None = REFERENCE_DAYS,
    rebuild: bool = False,
) -> tuple[Reference, bool]:
    """The bundle's reference, read from the registry or built and saved there once;
    whether it was built now."""
    path = reference_path(registry, bundle.version)
    if path.is_file() and not rebuild:
        reference = Reference.from_json(path.read_text())
        if (reference.model_version, reference.start) == (
            bundle.version,
            iso(reference_start(bundle, days)),
        ):
            return reference, False
    reference = build_reference(bundle, history, days)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(reference.to_json())
    os.replace(partial, path)
    return reference, True


@dataclass(frozen=True)
class Drift:
    """One input's (or the score's) live distribution against its reference."""

    name: str
    psi: float
    missing_reference: float
    missing_live: float
    reference: tuple[float, ...]
    live: tuple[float, ...]
    labels: tuple[str, ...]

    @property
    def band(self) -> str:
        return band(self.psi)

    @property
    def missing_change(self) -> float:
        return self.missing_live - self.missing_reference


def _drift(binned: Binned, values: np.ndarray) -> Drift:
    live = binned.shares_of(values)
    return Drift(
        name=binned.name,
        psi=psi(binned.shares, live) if len(values) else float("nan"),
        missing_reference=binned.missing,
        missing_live=float(live[-1]) if len(values) else float("nan"),
        reference=binned.shares,
        live=tuple(float(s) for s in live),
        labels=tuple(binned.labels()),
    )


@dataclass(frozen=True)
class DriftReport:
    """The live window against the reference: every input ranked by PSI, the score, the
    decision shares."""

    reference: Reference
    since: str
    until: str
    live_requests: int
    source: str  # "decisions" or "requests": how the live requests were chosen
    features: tuple[Drift, ...]  # highest PSI first
    score: Drift
    decisions: DecisionRates | None
    computed_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def noise(self) -> float:
        """About the PSI two samples of these sizes from one population give (for ten
        bins): ``9 * (1/n_reference + 1/n_live)``."""
        if not self.live_requests:
            return float("nan")
        return 9 * (1 / self.reference.requests + 1 / self.live_requests)

    def flagged(self, threshold: float = MAJOR) -> list[str]:
        """Inputs whose PSI is at least ``threshold``."""
        return [d.name for d in self.features if d.psi >= threshold]

    def lines(self, top: int = 15, missing_points: float = 0.05) -> list[str]:
        """The terminal report."""
        ref = self.reference
        counts = {name: 0 for name in ("major shift", "moderate shift", "stable")}
        for d in self.features:
            if not math.isnan(d.psi):
                counts[d.band] += 1
        what = "decided" if self.source == "decisions" else "requested (no decision stored)"
        out = [
            f"model {ref.model_version}: reference = the end of its training window "
            f"[{ref.start}, {ref.until}), {ref.requests:,} requests",
            f"live: {self.live_requests:,} requests {what} in [{self.since}, {self.until})",
            f"PSI bands: below {MODERATE} stable, {MODERATE} to {MAJOR} moderate shift, "
            f"{MAJOR} and above major shift; sampling alone gives about {self.noise:.3f} here",
            "",
            f"score PSI {self.score.psi:.3f} ({self.score.band})",
            f"inputs: {len(self.features)}: {counts['major shift']} major shift, "
            f"{counts['moderate shift']} moderate shift, {counts['stable']} stable",
            "",
            f"  {'input':<52} {'PSI':>7}  {'band':<15} {'missing ref -> live':>20}",
        ]
        for d in self.features[:top]:
            out.append(
                f"  {d.name:<52} {d.psi:>7.3f}  {d.band:<15} "
                f"{d.missing_reference:>9.1%} -> {d.missing_live:>6.1%}"
            )
        more = sum(d.psi >= MODERATE for d in self.features[top:])
        if more:
            out.append(f"  ... and {more} more at {MODERATE} or above (--top to list them)")
        moved = [d for d in self.features if abs(d.missing_change) >= missing_points]
        out.append("")
        if moved:
            out.append(f"missing share changed by {missing_points * 100:g} points or more:")
            for d in sorted(moved, key=lambda d: -abs(d.missing_change)):
                out.append(
                    f"  {d.name:<52} {d.missing_reference:>6.1%} -> {d.missing_live:>6.1%} "
                    f"({d.missing_change:+.1%})"
                )
        else:
            out.append(f"no missing share changed by {missing_points * 100:g} points or more")
        out.append("")
        out.append(f"  {'decisions':<24}" + "".join(f"{d:>9}" for d in DECISIONS) + " no score")
        for name, rates in (("reference", ref.decisions), ("live", self.decisions)):
            if rates is None:
                out.append(f"  {name:<24} no decision stored")
                continue
            cells = "".join(f"{rates.share(d):>9.1%}" for d in DECISIONS)
            label = f"{name} ({rates.total:,})"
            out.append(f"  {label:<24}{cells} {rates.without_score / rates.total:>7.1%}")
        return out

    def write_prometheus(self, path: str | Path) -> Path:
        """The drift as a node_exporter textfile-collector file (written atomically)."""
        registry = CollectorRegistry()
        feature_psi = Gauge(
            "riskmodel_feature_psi",
            "PSI of a model input, live window against the champion's training window",
            ["feature"],
            registry=registry,
        )
        missing = Gauge(
            "riskmodel_missing_share",
            "Share of live requests whose model input is missing",
            ["feature"],
            registry=registry,
        )
        for d in self.features:
            feature_psi.labels(d.name).set(d.psi)
            missing.labels(d.name).set(d.missing_live)
        Gauge(
            "riskmodel_score_psi",
            "PSI of the champion's score, live window against its training window",
            registry=registry,
        ).set(self.score.psi)
        Gauge(
            "riskmodel_monitor_requests",
            "Live requests the drift figures were computed on",
            registry=registry,
        ).set(self.live_requests)
        Gauge(
            "riskmodel_monitor_timestamp_seconds",
            "When the drift figures were computed (Unix time)",
            registry=registry,
        ).set(datetime.fromisoformat(self.computed_at).timestamp())
        target = Path(path)
        write_to_textfile(str(target), registry)
        return target

    def write_html(self, path: str | Path, top: int = 12) -> Path:
        """A page with the report and its plots (PNG as data URIs: no network needed)."""
        ref = self.reference
        sections = [
            f"<h1>Drift of model {_e(ref.model_version)}</h1>",
            "<pre>" + _e("\n".join(self.lines())) + "</pre>",
            "<h2>Score</h2>",
            _img(_bars(self.score)),
        ]
        if self.decisions is not None or ref.decisions is not None:
            sections += ["<h2>Decisions by hour of day (UTC)</h2>", _img(_hours(self))]
        sections.append(f"<h2>The {top} inputs with the highest PSI</h2>")
        sections += [_img(_bars(d)) for d in self.features[:top]]
        rows = "".join(
            f"<tr><td>{_e(d.name)}</td><td>{d.psi:.3f}</td><td>{d.band}</td>"
            f"<td>{d.missing_reference:.1%}</td><td>{d.missing_live:.1%}</td></tr>"
            for d in self.features
        )
        sections += [
            "<h2>Every input</h2>",
            "<table><tr><th>input</th><th>PSI</th><th>band</th><th>missing, reference</th>"
            f"<th>missing, live</th></tr>{rows}</table>",
        ]
        page = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>Drift of model {_e(ref.model_version)}</title>"
            "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}"
            "td,th{padding:2px 8px;text-align:left}img{max-width:100%}</style>"
            f"</head><body>{''.join(sections)}</body></html>\n"
        )
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(page)
        return target


def compare(
    reference: Reference,
    bundle: ModelBundle,
    history: History,
    since: int,
    until: int | None = None,
) -> DriftReport:
    """The live window ``[since, until)`` (store microseconds) against ``reference``."""
    if reference.model_version != bundle.version:
        raise DataError(
            f"the reference describes model {reference.model_version}, not {bundle.version}"
        )
    decided = _decided_between(history, since, until)
    if len(history.decisions):
        source = "decisions"
        ids = set(decided["request_id"])
        requests = history.refund_requests[history.refund_requests["request_id"].isin(ids)]
        requests = requests.reset_index(drop=True)
    else:
        source = "requests"
        requests = _requests_between(history, since, until)
    if requests.empty:
        verb = "decided" if source == "decisions" else "made"
        end = "the end of the history" if until is None else iso(until)
        raise DataError(f"no refund request was {verb} from {iso(since)} to {end}")
    matrix, scores = _inputs_and_scores(bundle, history, requests)
    drifts = [_drift(binned, matrix[:, j]) for j, binned in enumerate(reference.features)]
    drifts.sort(key=lambda d: (-np.nan_to_num(d.psi, nan=-1.0), d.name))
    if until is None:
        times = pd.to_numeric(
            decided["decided_at"] if source == "decisions" else requests["requested_at"]
        )
        until = int(times.max()) + 1
    return DriftReport(
        reference=reference,
        since=iso(since),
        until=iso(until),
        live_requests=len(requests),
        source=source,
        features=tuple(drifts),
        score=_drift(reference.score, scores),
        decisions=DecisionRates.of(decided),
    )


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _img(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<p><img alt='' src='data:image/png;base64,{data}'></p>"


def _bars(drift: Drift) -> Figure:
    figure = Figure(figsize=(8, 2.6))
    axes = figure.subplots()
    at = np.arange(len(drift.labels))
    axes.bar(at - 0.2, drift.reference, width=0.4, label="reference")
    axes.bar(at + 0.2, drift.live, width=0.4, label="live")
    axes.set_xticks(at, drift.labels, rotation=30, ha="right", fontsize=7)
    axes.set_ylabel("share")
    axes.set_title(f"{drift.name}: PSI {drift.psi:.3f} ({drift.band})", fontsize=9)
    axes.legend(fontsize=7)
    return figure


def _hours(report: DriftReport) -> Figure:
    figure = Figure(figsize=(8, 2.8))
    axes = figure.subplots()
    sides: Iterable[tuple[str, DecisionRates | None, str]] = (
        ("reference", report.reference.decisions, "--"),
        ("live", report.decisions, "-"),
    )
    for name, rates, style in sides:
        if rates is None:
            continue
        for decision, colour in zip(DECISIONS, ("tab:green", "tab:orange", "tab:red"), strict=True):
            axes.plot(
                range(24),
                rates.hourly_share(decision),
                style,
                color=colour,
                label=f"{decision}, {name}",
            )
    axes.set_xlabel("hour of day (UTC)")
    axes.set_ylabel("share of decisions")
    axes.legend(fontsize=7, ncol=2)
    return figure
