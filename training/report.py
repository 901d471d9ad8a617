"""The evaluation report: one model (or several, compared) on one period of requests.

``evaluate`` measures a bundle on examples and returns an ``Evaluation`` (JSON-ready
figures plus the scores for plots); ``write_report`` writes ``report.json``,
``report.md`` and PNG plots into a directory. When the examples carry the simulator's
ground truth, the model is judged against it (and the recall of each abuse pattern is
reported); otherwise against the labels known.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve

from riskmodel.bundle import ModelBundle
from riskmodel.units import DAY, iso
from training.calibration import ranking_kept
from training.dataset import Examples
from training.metrics import (
    amount_caught_at_top,
    daily_precision_at_k,
    money_at_thresholds,
    ranking_metrics,
    recall_by_pattern,
    reliability,
    top_share_threshold,
)

__all__ = ["THRESHOLDS", "Evaluation", "evaluate", "label_maturity", "write_report"]

THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
SUMMARY_KEYS = (
    "roc_auc",
    "average_precision",
    "recall_at_1pct_fpr",
    "abusive_amount_caught_top",
    "honest_amount_held_top",
    "daily_precision_at_capacity",
    "brier",
)


@dataclass(frozen=True)
class Evaluation:
    model_version: str
    figures: dict[str, Any]  # JSON-ready
    scores: np.ndarray
    target: np.ndarray

    @property
    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = self.figures["summary"]
        return summary


def evaluate(
    bundle: ModelBundle,
    examples: Examples,
    *,
    review_share: float = 0.05,
    capacity_per_day: int | None = None,
    thresholds: Sequence[float] = THRESHOLDS,
    shap_rows: int = 20_000,
) -> Evaluation:
    """Every figure of the report for ``bundle`` on ``examples``."""
    margin = bundle.margin(examples.features)
    score = bundle.calibrator.apply(margin)  # what bundle.score gives, margin kept
    y = examples.target().astype(np.int8)
    day = examples.requested_at // DAY
    days = max(len(np.unique(day)), 1)
    if capacity_per_day is None:
        capacity_per_day = max(1, round(review_share * len(y) / days))
    ranking = ranking_metrics(y, score)
    top = amount_caught_at_top(y, score, examples.amount, review_share)
    daily = daily_precision_at_k(y, score, day, capacity_per_day)
    summary = {
        **ranking,
        "abusive_amount_caught_top": top["abusive_amount_caught"],
        "honest_amount_held_top": top["honest_amount_held"],
        "daily_precision_at_capacity": daily["mean_precision"],
        "requests": len(y),
        "abusive": int(y.sum()),
    }
    figures: dict[str, Any] = {
        "model_version": bundle.version,
        "period": {
            "start": iso(int(examples.requested_at.min())) if len(y) else None,
            "end": iso(int(examples.requested_at.max())) if len(y) else None,
            "days": days,
        },
        "judged_against": "labels known" if examples.truth is None else "ground truth",
        "summary": summary,
        "top_share": top,
        "daily_review": daily,
        "thresholds": money_at_thresholds(y, score, examples.amount, day, thresholds),
        "reliability": reliability(y, score),
        "calibration": {"method": bundle.calibrator.kind, **ranking_kept(y, margin, score)},
        "label_maturity": label_maturity(bundle),
        "importance": _importance(bundle, examples, shap_rows),
    }
    if examples.truth is not None and examples.pattern is not None:
        figures["patterns"] = recall_by_pattern(
            examples.pattern, examples.truth, score, top_share_threshold(score, review_share)
        )
    if examples.truth is not None:
        figures["against_labels"] = ranking_metrics(examples.label, score)
    return Evaluation(bundle.version, figures, score, y)


def label_maturity(bundle: ModelBundle) -> dict[str, Any]:
    """The label maturity ``bundle`` was trained with, and how it was chosen."""
    recorded = bundle.details.get("maturity")
    if recorded:
        return {
            "days": recorded["days"],
            "estimated": "estimate" in recorded,
            "description": recorded["description"],
        }
    days = bundle.training_window.maturity_days  # a bundle from before it was recorded
    return {"days": days, "estimated": False, "description": f"label maturity {days:g} days"}


def _importance(bundle: ModelBundle, examples: Examples, rows: int) -> list[dict[str, Any]]:
    gain = bundle.booster.feature_importance(importance_type="gain")
    total = float(gain.sum()) or 1.0
    sample = examples.features
    if len(sample) > rows:
        sample = sample.iloc[np.linspace(0, len(sample) - 1, rows).astype(int)]
    shap = bundle.contributions(sample).abs().mean() if len(sample) else None
    table = [
        {
            "feature": name,
            "gain_share": float(gain[i] / total),
            "mean_abs_shap": None if shap is None else float(shap[name]),
        }
        for i, name in enumerate(bundle.feature_names)
    ]
    return sorted(table, key=lambda r: -r["gain_share"])


def write_report(
    evaluations: Sequence[Evaluation], out: str | Path, title: str = "Model evaluation"
) -> Path:
    """Write ``report.json``, ``report.md`` and plots for the first evaluation, compared
    with the others (same period) when given. Returns the Markdown file."""
    if not evaluations:
        raise ValueError("write_report needs at least one evaluation")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    main = evaluations[0]
    document = {
        "title": title,
        **main.figures,
        "compared_with": [e.figures for e in evaluations[1:]],
    }
    (out / "report.json").write_text(json.dumps(document, indent=2, default=_jsonable) + "\n")
    _plot_reliability(evaluations, out / "reliability.png")
    _plot_precision_recall(evaluations, out / "precision_recall.png")
    _plot_importance(main, out / "importance.png")
    path = out / "report.md"
    path.write_text(_markdown(evaluations, title))
    return path


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value)}")


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _markdown(evaluations: Sequence[Evaluation], title: str) -> str:
    main = evaluations[0].figures
    period = main["period"]
    lines = [
        f"# {title}",
        "",
        f"Model `{main['model_version']}` on {main['summary']['requests']:,} refund requests "
        f"from {period['start']} to {period['end']} ({period['days']} days), judged against "
        f'{main["judged_against"]} ({main["summary"]["abusive"]:,} abusive). "top" is the '
        f"{main['top_share']['share_reviewed']:.0%} highest-scored requests.",
        "",
        "| measure | " + " | ".join(f"`{e.model_version}`" for e in evaluations) + " |",
        "|---|" + "---|" * len(evaluations),
    ]
    for key in SUMMARY_KEYS:
        values = [_fmt(e.summary.get(key)) for e in evaluations]
        lines.append(f"| {key} | " + " | ".join(values) + " |")
    daily = main["daily_review"]
    lines += [
        "",
        f"Daily review of the {daily['capacity_per_day']} highest-scored requests: mean "
        f"precision {_fmt(daily['mean_precision'])}, share of abuse caught "
        f"{_fmt(daily['abuse_caught'])}.",
        "",
        "## Money and review load at candidate thresholds",
        "",
        "| threshold | flagged/day | precision | recall | abusive amount caught | share "
        "| honest amount held | share |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in main["thresholds"]:
        lines.append(
            f"| {row['threshold']:.2f} | {row['flagged_per_day']:.1f} | {_fmt(row['precision'])} "
            f"| {_fmt(row['recall'])} | {row['abusive_amount_caught']:,.2f} "
            f"| {_fmt(row['abusive_amount_caught_share'])} | {row['honest_amount_held']:,.2f} "
            f"| {_fmt(row['honest_amount_held_share'])} |"
        )
    if "patterns" in main:
        lines += [
            "",
            "## Per pattern (ground truth), flagged when reviewing the top",
            "",
            "| pattern | abusive | requests | flagged |",
            "|---|---|---|---|",
        ]
        for name, row in sorted(main["patterns"].items(), key=lambda kv: not kv[1]["abusive"]):
            lines.append(
                f"| {name} | {'yes' if row['abusive'] else 'no'} | {row['requests']} "
                f"| {row['flagged_share']:.3f} |"
            )
    lines += [
        "",
        "## Calibration",
        "",
        f"Brier score {_fmt(main['summary']['brier'])}; mean score "
        f"{_fmt(main['summary']['mean_score'])} against an abuse rate of "
        f"{_fmt(main['summary']['abuse_rate'])}.",
        "",
        "The calibration map must keep the trees' order: before it (the raw margin) and "
        "after it (the score), on these requests:",
        "",
        "| model | calibration | average precision before | after | distinct before | after |",
        "|---|---|---|---|---|---|",
    ]
    for e in evaluations:
        kept = e.figures["calibration"]
        lines.append(
            f"| `{e.model_version}` | {kept['method']} | "
            f"{_fmt(kept['average_precision_before'])} | {_fmt(kept['average_precision_after'])} "
            f"| {kept['distinct_before']:,} | {kept['distinct_after']:,} |"
        )
    lines += [
        "",
        f"Trained with a {main['label_maturity']['description']}.",
        "",
        "![reliability](reliability.png)",
        "",
        "![precision-recall](precision_recall.png)",
        "",
        "## Feature importance (top 15 by gain)",
        "",
        "| feature | gain share | mean abs SHAP |",
        "|---|---|---|",
    ]
    for row in main["importance"][:15]:
        lines.append(
            f"| {row['feature']} | {row['gain_share']:.3f} | {_fmt(row['mean_abs_shap'])} |"
        )
    lines += ["", "![importance](importance.png)", ""]
    return "\n".join(lines)


def _plot_reliability(evaluations: Sequence[Evaluation], path: Path) -> None:
    figure = Figure(figsize=(5, 5))
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfect")
    for evaluation in evaluations:
        rows = evaluation.figures["reliability"]
        axes.plot(
            [r["mean_score"] for r in rows],
            [r["observed_rate"] for r in rows],
            marker="o",
            label=evaluation.model_version,
        )
    axes.set_xlabel("mean predicted P(abuse)")
    axes.set_ylabel("observed abuse rate")
    axes.set_title("Reliability (bins of equal count)")
    axes.legend(loc="upper left", fontsize="small")
    figure.savefig(path, dpi=100, bbox_inches="tight")


def _plot_precision_recall(evaluations: Sequence[Evaluation], path: Path) -> None:
    figure = Figure(figsize=(5, 5))
    axes = figure.add_subplot()
    drawn = False
    for evaluation in evaluations:
        if 0 < int(evaluation.target.sum()) < len(evaluation.target):
            precision, recall, _ = precision_recall_curve(evaluation.target, evaluation.scores)
            axes.plot(recall, precision, label=evaluation.model_version)
            drawn = True
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title("Precision-recall" if drawn else "Precision-recall (one outcome only: none)")
    if drawn:
        axes.legend(loc="upper right", fontsize="small")
    figure.savefig(path, dpi=100, bbox_inches="tight")


def _plot_importance(evaluation: Evaluation, path: Path, top: int = 15) -> None:
    rows = evaluation.figures["importance"][:top][::-1]
    figure = Figure(figsize=(7, 6))
    axes = figure.add_subplot()
    axes.barh([r["feature"] for r in rows], [r["gain_share"] for r in rows])
    axes.set_xlabel("share of total gain")
    axes.set_title(f"Feature importance, {evaluation.model_version}")
    figure.savefig(path, dpi=100, bbox_inches="tight")
