"""The shadow report: would the challenger have decided the live requests differently, and
was it right more often than the champion?

The service scores every decided request with the registry's challenger too and keeps that
score in the decision's ``shadow`` column (``{"model_version": ..., "score": ...}``, or
``{"model_version": ..., "error": ...}`` when it failed). This module reads the decisions
of a period back from the store and puts the two models side by side.

What is compared
----------------
The features a decision was made on are not stored, so the policy cannot be run again in
full. What can be redone exactly is the one step the score enters: the model's verdict
against the thresholds (``riskmodel.engine``'s step 3). Everything else the engine did is
read from the stored decision's reasons, which name every list hit, every rule that held,
the green channel, the money checks, a degraded input and the service's holds. The
challenger's decision is then the engine's decision with the challenger's score in place
of the champion's and all else as it was: the same block lists and block rules, the same
segment (amount asked, product type, account age) and green-channel threshold, the same
softening by an allow list or approve rule, the same review rules, money checks and holds
(``decision_with``; a test holds it equal to ``riskmodel.engine.decide``).

That needs the policy the decision was made with: only decisions whose ``policy_hash`` is
the given policy file's are compared (the others are counted by policy version), and each
is first rebuilt with its own champion score; one that does not come back as stored is
counted and left out rather than guessed at.

Limits
------
- A decision made without a champion score (degraded), or whose challenger failed, has
  nothing to compare and is counted apart.
- The challenger is compared on the champion's world: a request it would have approved
  was sent to review or blocked in reality, and the reviewer's verdict (a label) exists
  largely *because* the champion held it. Labels are therefore richer where the champion
  held, and precision and recall favour the model in service; the ranking figure (AP)
  suffers less, but the labelled set is still the champion's choice.
- Where the challenger would approve what the champion held, what it would have paid is
  at most the amount asked: the prorated entitlement of a membership is not stored.
- Money is in cents of the reporting currency (``riskmodel.store.base_amount``); the
  amount approved is converted at its order's currency rate.
- Labels are the latest verdict known now for each request (an abuse verdict wins a tie);
  a request without one is left out of precision, recall and AP, and counted.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score
from sqlalchemy import Engine, and_, func, select, true

from riskmodel import units
from riskmodel.domain import Decision
from riskmodel.engine import POLICY_CODES, segment_for
from riskmodel.policy import Policy
from riskmodel.store import EVENT_TABLES, base_amount, decisions

__all__ = [
    "ModelFigures",
    "ShadowReport",
    "StoredDecision",
    "decision_with",
    "model_verdict",
    "render",
    "shadow_report",
]

_MONEY_REVIEW = frozenset({"ENTITLEMENT_UNKNOWN", "NOTHING_REFUNDABLE"})


@dataclass(frozen=True)
class StoredDecision:
    """What ``decision_with`` reads of a stored decision besides a score: its reasons as
    (code, kind) pairs, and the request fields a threshold segment matches on."""

    reasons: tuple[tuple[str, str], ...]
    amount: float | None  # asked back, currency units
    product_type: str | None
    account_age_days: float | None  # None: an unknown user


def model_verdict(
    score: float,
    policy: Policy,
    *,
    amount: float | None,
    product_type: str | None,
    account_age_days: float | None,
    green: bool,
) -> Decision:
    """The model's verdict on ``score`` under ``policy``'s thresholds: the first matching
    segment's pair (else the default), the review threshold raised for a green-channel
    buyer, as ``riskmodel.engine.decide`` takes it."""
    row = {"amount": amount, "product_type": product_type, "account_age_days": account_age_days}
    segment = segment_for(row, policy)
    thresholds = policy.spec.thresholds if segment is None else segment
    review_at, block_at = thresholds.review, thresholds.block
    gc = policy.spec.green_channel
    if green and gc is not None:
        review_at = min(max(review_at, gc.review_threshold), block_at)
    if score >= block_at and block_at < 1.0:
        return Decision.BLOCK
    return Decision.REVIEW if score >= review_at else Decision.APPROVE


def decision_with(score: float, stored: StoredDecision, policy: Policy) -> Decision:
    """The decision ``policy`` gives ``stored``'s request with ``score`` as the model's
    score, everything but the model's verdict as the stored reasons say it was.

    ``score`` must be a probability. Raises ``KeyError`` when a stored rule code is not
    one of the policy's rules (the decision was made with another policy)."""
    codes = {code for code, _ in stored.reasons}
    green = "GREEN_CHANNEL" in codes
    gc = policy.spec.green_channel
    exempt = set(gc.exempt_rules) if green and gc is not None else set()
    rules = {rule.code: rule for rule in policy.spec.rules}
    applied = {
        rules[code].action
        for code, kind in stored.reasons
        if kind == "rule" and rules[code].name not in exempt
    }
    blocked = any(
        kind == "list" and code.startswith("LIST_BLOCK_") for code, kind in stored.reasons
    )
    allowed = any(
        kind == "list" and code.startswith("LIST_ALLOW_") for code, kind in stored.reasons
    )
    verdict = model_verdict(
        score,
        policy,
        amount=stored.amount,
        product_type=stored.product_type,
        account_age_days=stored.account_age_days,
        green=green,
    )
    # With a score, DEGRADED means inputs were missing: at least review, never softened.
    if "DEGRADED" in codes:
        verdict = Decision.most_severe(verdict, Decision.REVIEW)
    elif allowed or Decision.APPROVE in applied:
        verdict = Decision.REVIEW if verdict is Decision.BLOCK else Decision.APPROVE
    # A policy reason the engine does not make itself is a hold of the service's.
    holds = any(kind == "policy" and code not in POLICY_CODES for code, kind in stored.reasons)
    review = Decision.REVIEW in applied or bool(codes & _MONEY_REVIEW) or holds
    return Decision.most_severe(
        Decision.BLOCK if blocked or Decision.BLOCK in applied else Decision.APPROVE,
        verdict,
        Decision.REVIEW if review else Decision.APPROVE,
    )


@dataclass(frozen=True)
class ModelFigures:
    """One model's figures on the labelled requests compared. A request is *held* when its
    decision is review or block; precision is the share of held requests that were abuse,
    recall the share of abuse held (the same for blocks alone); AP ranks by the model's
    score. None where undefined (nothing held, no abuse)."""

    held: int
    held_precision: float | None
    held_recall: float | None
    blocked: int
    block_precision: float | None
    block_recall: float | None
    average_precision: float | None

    @classmethod
    def of(
        cls, decided: Sequence[Decision], scores: Sequence[float], y: np.ndarray
    ) -> ModelFigures:
        """The figures of ``decided`` and ``scores`` against ``y`` (1 abuse, 0 honest)."""
        held = np.array([d is not Decision.APPROVE for d in decided], dtype=bool)
        blocked = np.array([d is Decision.BLOCK for d in decided], dtype=bool)
        abuse = int(y.sum())
        return cls(
            held=int(held.sum()),
            held_precision=_share(int(y[held].sum()), int(held.sum())),
            held_recall=_share(int(y[held].sum()), abuse),
            blocked=int(blocked.sum()),
            block_precision=_share(int(y[blocked].sum()), int(blocked.sum())),
            block_recall=_share(int(y[blocked].sum()), abuse),
            average_precision=(
                float(average_precision_score(y, np.asarray(scores, dtype=float)))
                if abuse
                else None
            ),
        )


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True)
class ShadowReport:
    """Champion against shadow challenger over the decisions of a period (module
    docstring). Money in cents of the reporting currency; times in store microseconds."""

    policy_version: str
    policy_sha256: str
    since: int | None
    until: int | None
    decisions: int  # in the period, with a challenger score or not
    challenger_version: str | None  # None: no decision of the period has a shadow score
    champion_versions: dict[str, int]  # of the decisions compared
    left_out: dict[str, int]  # why, and how many decisions of the period
    other_policies: dict[str, int]  # policy version -> shadow-scored decisions made with it
    compared: int
    changes: dict[str, dict[str, int]]  # champion's decision -> challenger's -> requests
    differ: int
    differ_asked: int  # amount asked, where the two decide differently
    differ_approved: int  # the champion approved, where the two decide differently
    withheld: int  # champion approves, challenger would hold
    withheld_approved: int  # what the champion paid on those
    released: int  # champion holds, challenger would approve
    released_asked: int  # asked on those: at most what the challenger would pay
    labelled: int
    unlabelled: int
    abusive: int
    champion: ModelFigures | None  # None without a label
    challenger: ModelFigures | None

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values, money as decimal strings."""
        out: dict[str, Any] = {
            "policy": {"version": self.policy_version, "sha256": self.policy_sha256},
            "period": {
                "since": None if self.since is None else units.iso(self.since),
                "until": None if self.until is None else units.iso(self.until),
            },
            "decisions": self.decisions,
            "challenger_version": self.challenger_version,
            "champion_versions": self.champion_versions,
            "left_out": self.left_out,
            "other_policies": self.other_policies,
            "compared": self.compared,
            "changes": self.changes,
            "differ": self.differ,
            "money_where_they_differ": {
                "asked": units.money(self.differ_asked),
                "champion_approved": units.money(self.differ_approved),
                "champion_approves_challenger_holds": {
                    "requests": self.withheld,
                    "champion_approved": units.money(self.withheld_approved),
                },
                "champion_holds_challenger_approves": {
                    "requests": self.released,
                    "asked": units.money(self.released_asked),
                },
            },
            "labels": {
                "labelled": self.labelled,
                "unlabelled": self.unlabelled,
                "abusive": self.abusive,
            },
        }
        for name in ("champion", "challenger"):
            figures = getattr(self, name)
            out[name] = None if figures is None else asdict(figures)
        return out


_ORDER = (Decision.APPROVE, Decision.REVIEW, Decision.BLOCK)
_OTHER_POLICY = "made with another policy"


def shadow_report(
    engine: Engine,
    policy: Policy,
    *,
    since: int | None = None,
    until: int | None = None,
    challenger: str | None = None,
) -> ShadowReport:
    """Compare champion and challenger on the decisions made in [``since``, ``until``)
    (store microseconds; None: unbounded) with ``policy``; ``challenger``: the challenger
    version to report (default: the one that scored the latest decision)."""
    requests = EVENT_TABLES["refund_requests"]
    orders = EVENT_TABLES["orders"]
    users = EVENT_TABLES["users"]
    rates = EVENT_TABLES["rates"]
    labels = EVENT_TABLES["labels"]
    period = and_(
        true(),
        *([decisions.c.decided_at >= since] if since is not None else []),
        *([decisions.c.decided_at < until] if until is not None else []),
    )
    shadowed = and_(period, decisions.c.shadow.is_not(None))
    joined = (
        decisions.outerjoin(requests, requests.c.request_id == decisions.c.request_id)
        .outerjoin(orders, orders.c.order_id == requests.c.order_id)
        .outerjoin(users, users.c.user_id == requests.c.user_id)
        .outerjoin(rates, rates.c.currency == orders.c.currency)
    )
    query = (
        select(
            decisions.c.request_id,
            decisions.c.decision,
            decisions.c.score,
            decisions.c.approved_amount,
            decisions.c.reasons,
            decisions.c.model_version,
            decisions.c.policy_version,
            decisions.c.policy_hash,
            decisions.c.decided_at,
            decisions.c.shadow,
            requests.c.amount,
            requests.c.base_amount,
            requests.c.requested_at,
            orders.c.product_type,
            users.c.registered_at,
            rates.c.rate,
        )
        .select_from(joined)
        .where(shadowed)
        .order_by(decisions.c.decided_at, decisions.c.request_id)
    )
    verdicts = (
        select(labels.c.request_id, labels.c.is_abuse, labels.c.labeled_at)
        .select_from(labels.join(decisions, decisions.c.request_id == labels.c.request_id))
        .where(shadowed)
    )
    with engine.connect() as conn:
        total = int(
            conn.execute(select(func.count()).select_from(decisions).where(period)).scalar_one()
        )
        rows = conn.execute(query).mappings().all()
        latest: dict[str, tuple[int, bool]] = {}
        for request_id, is_abuse, labeled_at in conn.execute(verdicts):
            # The latest verdict counts; of two at the same time, abuse.
            key = (int(labeled_at), bool(is_abuse))
            if request_id not in latest or key > latest[request_id]:
                latest[request_id] = key
    return _compare(
        rows,
        {request_id: abuse for request_id, (_, abuse) in latest.items()},
        policy,
        total=total,
        since=since,
        until=until,
        challenger=challenger,
    )


@dataclass
class _Tally:
    left_out: Counter[str] = field(default_factory=Counter)
    other_policies: Counter[str] = field(default_factory=Counter)
    champion_versions: Counter[str] = field(default_factory=Counter)
    changes: Counter[tuple[Decision, Decision]] = field(default_factory=Counter)
    money: Counter[str] = field(default_factory=Counter)
    labelled: list[tuple[bool, Decision, Decision, float, float]] = field(default_factory=list)
    unlabelled: int = 0


def _shadow_score(text: str) -> tuple[str | None, float | None]:
    """The challenger's version and score of a ``shadow`` column; no score when it failed
    or gave something that is not a probability."""
    try:
        shadow = json.loads(text)
    except ValueError:
        return None, None
    if not isinstance(shadow, dict):
        return None, None
    version, score = shadow.get("model_version"), shadow.get("score")
    name = None if version is None else str(version)
    if isinstance(score, int | float) and math.isfinite(score) and 0.0 <= score <= 1.0:
        return name, float(score)
    return name, None


def _compare(
    rows: Sequence[Mapping[Any, Any]],
    verdicts: Mapping[str, bool],
    policy: Policy,
    *,
    total: int,
    since: int | None,
    until: int | None,
    challenger: str | None,
) -> ShadowReport:
    tally = _Tally()
    tally.left_out["no challenger score"] = total - len(rows)
    scored = [(row, *_shadow_score(row["shadow"])) for row in rows]
    if challenger is None:
        # Rows come in decision order: the last one scored names the current challenger.
        challenger = next((v for _, v, s in reversed(scored) if s is not None), None)
    for row, version, shadow in scored:
        if shadow is None:
            tally.left_out["challenger failed"] += 1
        elif version != challenger:
            tally.left_out["another challenger version"] += 1
        elif row["policy_hash"] != policy.sha256:
            tally.left_out[_OTHER_POLICY] += 1
            tally.other_policies[str(row["policy_version"])] += 1
        elif row["score"] is None:
            tally.left_out["no champion score"] += 1
        else:
            _tally_one(tally, row, float(row["score"]), shadow, verdicts, policy)
    changes = {c.value: {d.value: tally.changes[(c, d)] for d in _ORDER} for c in _ORDER}
    compared = sum(tally.changes.values())
    champion = challenger_figures = None
    abusive = 0
    if tally.labelled:
        y = np.array([abuse for abuse, *_ in tally.labelled], dtype=int)
        abusive = int(y.sum())
        champion = ModelFigures.of(
            [c for _, c, _, _, _ in tally.labelled], [s for *_, s, _ in tally.labelled], y
        )
        challenger_figures = ModelFigures.of(
            [d for _, _, d, _, _ in tally.labelled], [s for *_, s in tally.labelled], y
        )
    return ShadowReport(
        policy_version=policy.version,
        policy_sha256=policy.sha256,
        since=since,
        until=until,
        decisions=total,
        challenger_version=challenger,
        champion_versions=dict(tally.champion_versions.most_common()),
        left_out={reason: n for reason, n in tally.left_out.items() if n},
        other_policies=dict(tally.other_policies.most_common()),
        compared=compared,
        changes=changes,
        differ=sum(n for (c, d), n in tally.changes.items() if c is not d),
        differ_asked=tally.money["differ_asked"],
        differ_approved=tally.money["differ_approved"],
        withheld=tally.money["withheld"],
        withheld_approved=tally.money["withheld_approved"],
        released=tally.money["released"],
        released_asked=tally.money["released_asked"],
        labelled=len(tally.labelled),
        unlabelled=tally.unlabelled,
        abusive=abusive,
        champion=champion,
        challenger=challenger_figures,
    )


def _tally_one(
    tally: _Tally,
    row: Mapping[Any, Any],
    score: float,
    shadow: float,
    verdicts: Mapping[str, bool],
    policy: Policy,
) -> None:
    requested_at, registered_at = row["requested_at"], row["registered_at"]
    stored = StoredDecision(
        reasons=tuple((r["code"], r["kind"]) for r in json.loads(row["reasons"])),
        amount=None if row["amount"] is None else row["amount"] / units.CENTS,
        product_type=row["product_type"],
        account_age_days=(
            None
            if requested_at is None or registered_at is None
            else (requested_at - registered_at) / units.DAY
        ),
    )
    champion = Decision(row["decision"])
    try:
        rebuilt = decision_with(score, stored, policy)
    except KeyError:
        rebuilt = None
    if rebuilt is not champion:
        # Whatever made the stored decision is not what this report can redo: no guess.
        tally.left_out["not rebuilt from its reasons"] += 1
        return
    challenger = decision_with(shadow, stored, policy)
    tally.champion_versions[str(row["model_version"])] += 1
    tally.changes[(champion, challenger)] += 1
    if challenger is not champion:
        asked = int(row["base_amount"] or 0)
        approved = base_amount(int(row["approved_amount"]), row["rate"])
        tally.money["differ_asked"] += asked
        tally.money["differ_approved"] += approved
        if champion is Decision.APPROVE:
            tally.money["withheld"] += 1
            tally.money["withheld_approved"] += approved
        elif challenger is Decision.APPROVE:
            tally.money["released"] += 1
            tally.money["released_asked"] += asked
    abuse = verdicts.get(row["request_id"])
    if abuse is None:
        tally.unlabelled += 1
    else:
        tally.labelled.append((abuse, champion, challenger, score, shadow))


def _rate(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render(report: ShadowReport) -> str:
    """The report as a terminal table."""
    since = "the start" if report.since is None else units.iso(report.since)
    until = "now" if report.until is None else units.iso(report.until)
    lines = [
        f"shadow report: decisions from {since} to {until}, "
        f"policy {report.policy_version} (sha256 {report.policy_sha256[:12]})",
        f"{'decisions in the period':<44}{report.decisions:>10,}",
    ]
    for reason, n in report.left_out.items():
        lines.append(f"  {'left out: ' + reason:<42}{n:>10,}")
        if reason == _OTHER_POLICY:
            for version, m in report.other_policies.items():
                lines.append(f"    {'policy ' + version:<40}{m:>10,}")
    if report.challenger_version is None:
        lines.append(
            "no decision in the period has a challenger score: nothing to compare "
            "(is a challenger promoted in the registry the service reads?)"
        )
        return "\n".join(lines) + "\n"
    champions = ", ".join(f"{v} ({n:,})" for v, n in report.champion_versions.items())
    lines.append(f"{'compared':<44}{report.compared:>10,}")
    lines.append(f"challenger {report.challenger_version} against champion {champions or '-'}")
    if report.compared == 0:
        lines.append("no decision could be compared with this policy and challenger")
        return "\n".join(lines) + "\n"
    lines += ["", "champion \\ challenger".ljust(24) + "".join(f"{d.value:>10}" for d in _ORDER)]
    for c in _ORDER:
        counts = report.changes[c.value]
        lines.append(f"{c.value:<24}" + "".join(f"{counts[d.value]:>10,}" for d in _ORDER))
    money = units.money
    lines += [
        "",
        f"decide differently: {report.differ:,} of {report.compared:,} "
        f"({_rate(report.differ, report.compared)})",
        f"  money where they differ: asked {money(report.differ_asked)}, "
        f"champion approved {money(report.differ_approved)}",
        f"  champion approves, challenger holds: {report.withheld:,}, "
        f"champion paid {money(report.withheld_approved)}",
        f"  champion holds, challenger approves: {report.released:,}, "
        f"asked {money(report.released_asked)} (at most what the challenger pays)",
        "",
        f"labels: {report.labelled:,} of {report.compared:,} compared requests "
        f"({report.abusive:,} abuse); {report.unlabelled:,} without a label, left out",
    ]
    if report.champion is None or report.challenger is None:
        lines.append("no label yet: precision, recall and AP wait for verdicts")
        return "\n".join(lines) + "\n"
    lines.append(f"{'':<24}{'champion':>12}{'challenger':>12}")
    a, b = report.champion, report.challenger
    for name, left, right in (
        ("held (review, block)", f"{a.held:,}", f"{b.held:,}"),
        ("precision (held)", _figure(a.held_precision), _figure(b.held_precision)),
        ("recall (held)", _figure(a.held_recall), _figure(b.held_recall)),
        ("blocked", f"{a.blocked:,}", f"{b.blocked:,}"),
        ("precision (blocked)", _figure(a.block_precision), _figure(b.block_precision)),
        ("recall (blocked)", _figure(a.block_recall), _figure(b.block_recall)),
        ("average precision", _figure(a.average_precision), _figure(b.average_precision)),
    ):
        lines.append(f"{name:<24}{left:>12}{right:>12}")
    return "\n".join(lines) + "\n"
