"""The reports of ``riskmodel backtest`` and ``riskmodel tune``, money first.

Each policy (or threshold pair) compared is a ``Column``: its figures (``summarise``'s keys,
or a row of the trade-off table) and its blocks per cause. Every report, printed,
``report.json`` or ``report.md``, opens with the same money lines for each column, before
any rate:

- abusive money paid: the approved amounts on abusive requests, and their share of all the
  abusive amount asked;
- honest money held: the amount asked by honest requests that were reviewed or blocked,
  and its share of all the honest amount asked;
- honest requests blocked, with their share of the honest requests and the amount they
  asked, in all and per reason code that caused the block (a block list, a block rule or
  the model's score; one cause per block, so the split adds up).

Money is in currency units.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from riskmodel.units import iso
from training.backtest import BLOCK_COLUMNS, Backtest
from training.tune import Tuning

__all__ = [
    "BACKTEST_ROWS",
    "MONEY_KEYS",
    "TUNE_ROWS",
    "Column",
    "backtest_columns",
    "backtest_document",
    "backtest_markdown",
    "money_rows",
    "money_text",
    "tuning_columns",
    "tuning_document",
    "tuning_markdown",
    "write_report",
]

MONEY_KEYS = (
    "paid_to_abuse",
    "paid_to_abuse_share",
    "honest_held_amount",
    "honest_held_amount_share",
    "honest_blocked",
    "honest_block_rate",
    "honest_blocked_amount",
    "honest_blocked_amount_share",
)
"""The money figures, in the order every report gives them."""

BACKTEST_ROWS = (
    ("requests", "{:,.0f}"),
    ("approve_rate", "{:.2%}"),
    ("review_rate", "{:.2%}"),
    ("block_rate", "{:.2%}"),
    ("abuse_caught", "{:,.0f}"),
    ("abuse_caught_share", "{:.2%}"),
    ("abuse_caught_amount", "{:,.2f}"),
    ("abuse_blocked", "{:,.0f}"),
    ("paid_to_abuse", "{:,.2f}"),
    ("honest_held", "{:,.0f}"),
    ("honest_held_share", "{:.2%}"),
    ("honest_held_amount", "{:,.2f}"),
    ("honest_blocked_amount", "{:,.2f}"),
    ("paid_total", "{:,.2f}"),
    ("reviews_per_day_mean", "{:,.1f}"),
    ("reviews_per_day_max", "{:,.0f}"),
)
"""The backtest's rates and counts, after the money."""

TUNE_ROWS = (
    ("review_rate", "{:.2%}"),
    ("block_rate", "{:.2%}"),
    ("reviews_per_day_mean", "{:,.1f}"),
    ("reviews_per_day_max", "{:,.0f}"),
    ("abuse_caught", "{:,.0f}"),
    ("abuse_caught_amount", "{:,.2f}"),
    ("abuse_caught_amount_share", "{:.2%}"),
    ("abuse_blocked", "{:,.0f}"),
    ("paid_to_abuse", "{:,.2f}"),
    ("honest_held", "{:,.0f}"),
    ("honest_held_amount", "{:,.2f}"),
    ("honest_held_amount_share", "{:.2%}"),
    ("honest_blocked", "{:,.0f}"),
    ("honest_blocked_amount", "{:,.2f}"),
    ("honest_blocked_amount_share", "{:.3%}"),
)
"""The tuning's rates and counts per pair, after the money."""


@dataclass(frozen=True)
class Column:
    """One policy (or threshold pair) of a report: ``role`` ("new", "current", "proposed",
    "closest"), its ``version`` or pair, its figures and its blocks per cause."""

    role: str
    name: str
    figures: Mapping[str, Any]
    blocks: pd.DataFrame

    @property
    def label(self) -> str:
        return f"{self.role} {self.name}"


# --- the money lines --------------------------------------------------------------------


def money_rows(columns: Sequence[Column]) -> list[tuple[str, list[str]]]:
    """The money lines, one cell per column: abusive money paid, honest money held, honest
    requests blocked and their amount, then the honest blocks per cause (every cause that
    blocks an honest request under one of the columns)."""
    rows = [
        (
            "abusive money paid (of abusive asked)",
            [_amount_share(c.figures, "paid_to_abuse", "paid_to_abuse_share") for c in columns],
        ),
        (
            "honest money held (reviewed/blocked)",
            [
                _amount_share(c.figures, "honest_held_amount", "honest_held_amount_share")
                for c in columns
            ],
        ),
        (
            "honest requests blocked (of honest)",
            [
                f"{float(c.figures['honest_blocked']):,.0f} "
                f"({float(c.figures['honest_block_rate']):.2%})"
                for c in columns
            ],
        ),
        (
            "  honest money blocked",
            [
                _amount_share(
                    c.figures, "honest_blocked_amount", "honest_blocked_amount_share", "{:.3%}"
                )
                for c in columns
            ],
        ),
    ]
    found = [_by_cause(column.blocks) for column in columns]
    for cause in _honest_causes(found):
        cells = []
        for blocks in found:
            row = blocks.get(cause)
            if row is not None and row["honest_blocked"] > 0:
                cells.append(
                    f"{int(row['honest_blocked']):,} ({row['honest_blocked_amount']:,.2f})"
                )
            else:
                cells.append("0")
        rows.append((f"  by {cause}", cells))
    return rows


def _by_cause(blocks: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Cause -> ``BLOCK_COLUMNS`` -> value, as plain floats."""
    return {
        str(cause): {key: float(value) for key, value in zip(BLOCK_COLUMNS, values, strict=True)}
        for cause, values in zip(
            blocks.index, blocks[list(BLOCK_COLUMNS)].to_numpy(dtype=float), strict=True
        )
    }


def money_text(columns: Sequence[Column], label_width: int = 40, width: int = 26) -> list[str]:
    """The money lines as printed: a header naming the columns, then ``money_rows``."""
    lines = [
        f"money first{'':<{label_width - 9}}" + "".join(f"{c.label:>{width}}" for c in columns)
    ]
    for label, cells in money_rows(columns):
        lines.append(f"  {label:<{label_width}}" + "".join(f"{cell:>{width}}" for cell in cells))
    return lines


def _amount_share(figures: Mapping[str, Any], amount: str, share: str, fmt: str = "{:.2%}") -> str:
    return f"{float(figures[amount]):,.2f} ({fmt.format(float(figures[share]))})"


def _honest_causes(found: Sequence[Mapping[str, Mapping[str, float]]]) -> list[str]:
    """Causes with an honest block in some column, the most honest blocks (summed over the
    columns) first."""
    totals: dict[str, float] = {}
    for blocks in found:
        for cause, row in blocks.items():
            totals[cause] = totals.get(cause, 0.0) + row["honest_blocked"]
    return sorted((c for c, n in totals.items() if n > 0), key=lambda c: (-totals[c], c))


# --- columns ----------------------------------------------------------------------------


def backtest_columns(result: Backtest, new: str, current: str | None) -> list[Column]:
    """The new policy and, when compared, the current one."""
    columns = [Column("new", new, result.summary["new"], result.blocks["new"])]
    if current is not None:
        columns.append(
            Column("current", current, result.summary["current"], result.blocks["current"])
        )
    return columns


def tuning_columns(result: Tuning) -> list[Column]:
    """The policy's own pair and the proposed (or, when none fits, the closest) pair."""
    current, proposal = result.current, result.proposal
    role = "proposed" if proposal.feasible else "closest"
    return [
        Column(
            "current",
            f"{current['review']:g} / {current['block']:g}",
            _figures(current),
            result.blocks(current),
        ),
        Column(
            role,
            f"{proposal.review:g} / {proposal.block:g}",
            _figures(proposal.row),
            result.blocks(proposal.row),
        ),
    ]


def _figures(row: pd.Series) -> dict[str, Any]:
    return {str(key): value for key, value in row.items()}


# --- JSON -------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        return round(float(value), 6)
    return value


def _blocks_json(blocks: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {
            "cause": cause,
            "honest_blocked": int(row["honest_blocked"]),
            "honest_blocked_amount": round(row["honest_blocked_amount"], 2),
            "abuse_blocked": int(row["abuse_blocked"]),
            "abuse_blocked_amount": round(row["abuse_blocked_amount"], 2),
        }
        for cause, row in _by_cause(blocks).items()
    ]


def _figure(figures: Mapping[str, Any], key: str, fmt: str = "") -> Any:
    """A figure for JSON: counts as integers, the rest as rounded floats."""
    value = float(figures[key])
    counted = key == "honest_blocked" or fmt == "{:,.0f}"
    return int(value) if counted and value.is_integer() else round(value, 6)


def _column_json(column: Column, rows: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {
        "role": column.role,
        "name": column.name,
        "money": {key: _figure(column.figures, key) for key in MONEY_KEYS},
        "blocked_by": _blocks_json(column.blocks),
        "rates": {key: _figure(column.figures, key, fmt) for key, fmt in rows},
    }


def backtest_document(
    result: Backtest, new: str, current: str | None, policies: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The backtest as JSON-ready data: the period, then per policy its money (first), its
    blocks per cause (honest and abusive) and its rates; then the decisions that change."""
    summary = result.summary["new"]
    times = result.decisions["requested_at"]
    document: dict[str, Any] = {
        "report": "backtest",
        "model_version": result.model_version,
        "outcomes_from": result.judged_against,
        "requests": int(summary["requests"]),
        "from": iso(int(times.min())) if len(times) else None,
        "to": iso(int(times.max())) if len(times) else None,
        "abusive_requests": int(summary["abusive_requests"]),
        "abusive_amount": _plain(summary["abusive_amount"]),
        "honest_requests": int(summary["honest_requests"]),
        "honest_amount": _plain(summary["honest_amount"]),
        "policies": [
            {**_column_json(c, BACKTEST_ROWS), "file": (policies or {}).get(c.role)}
            for c in backtest_columns(result, new, current)
        ],
    }
    if current is not None:
        changes = result.changes
        moves = changes.groupby(["current_decision", "decision"]).size()
        document["changes"] = {
            "requests": len(changes),
            "moves": {
                f"{move[0]} -> {move[1]}": int(count)  # type: ignore[index]
                for move, count in moves.items()
            },
        }
    return document


def tuning_document(result: Tuning, files: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The tuning as JSON-ready data: the period, the constraints and the verdict, then the
    current and the proposed (or closest) pair, each with its money first, its blocks per
    cause and its rates, and the blocks no pair changes."""
    proposal = result.proposal
    return {
        "report": "tune",
        "policy_version": result.policy_version,
        "tuned": result.tuned,
        "model_version": result.model_version,
        "outcomes_from": result.judged_against,
        "from": result.start,
        "to": result.end,
        "days": result.days,
        "requests": int(result.current["requests"]),
        "abusive_requests": result.abusive,
        "abusive_amount": _plain(result.abusive_amount),
        "honest_requests": result.honest,
        "honest_amount": _plain(result.honest_amount),
        "constraints": {
            "stated": result.constraints.describe(),
            **{limit.name: _plain(limit.bound) for limit in result.constraints.limits()},
        },
        "honest_weight": result.honest_weight,
        "feasible": proposal.feasible,
        "pairs_meeting_constraints": proposal.candidates,
        "proposed" if proposal.feasible else "closest": {
            "review": proposal.review,
            "block": proposal.block,
        },
        "violations": [
            {"constraint": v.constraint, "value": _plain(v.value), "limit": _plain(v.limit)}
            for v in proposal.violations
        ],
        "best_per_constraint": {k: _plain(v) for k, v in proposal.best.items()},
        "pairs": [_column_json(c, TUNE_ROWS) for c in tuning_columns(result)],
        "blocked_whatever_the_pair": _blocks_json(result.fixed_blocks),
        "files": dict(files or {}),
    }


# --- markdown ---------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _money_markdown(columns: Sequence[Column]) -> list[str]:
    lines = ["## Money", ""]
    lines += _table(["", *(c.label for c in columns)], [[k, *v] for k, v in money_rows(columns)])
    lines += [
        "",
        "Abusive money paid: approved amounts on abusive requests (share of all the abusive "
        "amount asked). Honest money held: asked by honest requests reviewed or blocked. "
        "Each block is put down to the one reason that caused it: a block list, else the "
        "first block rule, else the model's score (`MODEL_SCORE_BLOCK`).",
        "",
        "### Blocks by cause",
        "",
    ]
    found = [_by_cause(column.blocks) for column in columns]
    causes = sorted({cause for blocks in found for cause in blocks})
    header = ["cause"]
    for column in columns:
        header += [f"{column.label}: honest", "honest amount", "abusive", "abusive amount"]
    rows = []
    for cause in causes:
        row = [f"`{cause}`"]
        for blocks in found:
            got = blocks.get(cause, dict.fromkeys(BLOCK_COLUMNS, 0.0))
            row += [
                f"{int(got['honest_blocked']):,}",
                f"{got['honest_blocked_amount']:,.2f}",
                f"{int(got['abuse_blocked']):,}",
                f"{got['abuse_blocked_amount']:,.2f}",
            ]
        rows.append(row)
    lines += _table(header, rows) if rows else ["No request is blocked."]
    return lines


def _rates_markdown(columns: Sequence[Column], keys: Sequence[tuple[str, str]]) -> list[str]:
    lines = ["## Rates and counts", ""]
    rows = [[key, *(fmt.format(float(c.figures[key])) for c in columns)] for key, fmt in keys]
    return lines + _table(["", *(c.label for c in columns)], rows)


def backtest_markdown(result: Backtest, new: str, current: str | None) -> str:
    """The backtest as markdown: the period, the money, the blocks by cause, the rates,
    then the decisions that change."""
    document = backtest_document(result, new, current)
    against = f" against {current}" if current else ""
    lines = [
        f"# Backtest: policy {new}{against}",
        "",
        f"{document['requests']:,} requests from {document['from']} to {document['to']}, "
        f"model {result.model_version}, outcomes from {result.judged_against}: "
        f"{document['abusive_requests']:,} abusive asking {document['abusive_amount']:,.2f}, "
        f"{document['honest_requests']:,} honest asking {document['honest_amount']:,.2f}.",
        "",
    ]
    columns = backtest_columns(result, new, current)
    lines += [*_money_markdown(columns), "", *_rates_markdown(columns, BACKTEST_ROWS)]
    if "changes" in document:
        lines += ["", "## Decisions that change", ""]
        moves = document["changes"]["moves"]
        lines += _table(
            ["move", "requests"],
            [["total", f"{document['changes']['requests']:,}"]]
            + [[move, f"{count:,}"] for move, count in moves.items()],
        )
    return "\n".join(lines) + "\n"


def tuning_markdown(result: Tuning) -> str:
    """The tuning as markdown: the period and the verdict, the money of the current and the
    proposed pair, the blocks by cause, what the closest pair misses, the rates."""
    proposal = result.proposal
    verdict = (
        f"**Proposed: review {proposal.review:g}, block {proposal.block:g}** "
        f"({proposal.candidates:,} pairs meet every constraint)."
        if proposal.feasible
        else f"**No threshold pair meets every constraint**; the closest is review "
        f"{proposal.review:g}, block {proposal.block:g}."
    )
    lines = [
        f"# Tuning {result.tuned} of policy {result.policy_version}",
        "",
        f"{int(result.current['requests']):,} requests from {result.start} to {result.end} "
        f"({result.days} days), model {result.model_version}, outcomes from "
        f"{result.judged_against}: {result.abusive:,} abusive asking "
        f"{result.abusive_amount:,.2f}, {result.honest:,} honest asking "
        f"{result.honest_amount:,.2f}.",
        "",
        f"Constraints: {result.constraints.describe()}.",
        "",
        verdict,
        "",
    ]
    lines += [*_money_markdown(tuning_columns(result)), ""]
    if not proposal.feasible:
        lines += ["## What the closest pair misses", ""]
        lines += [f"- {violation}" for violation in proposal.violations]
        lines += ["", "The best any pair reaches, one constraint at a time:", ""]
        lines += [f"- {name}: {value:.4g}" for name, value in proposal.best.items()]
        lines += [""]
    lines += _rates_markdown(tuning_columns(result), TUNE_ROWS)
    return "\n".join(lines) + "\n"


def write_report(document: Mapping[str, Any], markdown: str, out: str | Path) -> Path:
    """Write ``report.json`` and ``report.md`` into ``out``; returns ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2, allow_nan=False) + "\n"
    (out / "report.json").write_text(text, encoding="utf-8")
    (out / "report.md").write_text(markdown, encoding="utf-8")
    return out
