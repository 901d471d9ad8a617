"""The bytes a call sends, and what its final answer means: shared by both clients.

A decision call ends in one of three ways. The service decided: its decision. The caller
sent something the service refuses (400, 401, 403, 404, 409, 413, 422): a typed error,
raised, because sending it again cannot help and a person must fix it. Anything else
(no answer within the budget, a server error, an answer that is not a decision): a review
made here (``CLIENT_FALLBACK``), so that the pipeline neither pays blind nor waits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from riskmodel_client.errors import ApiError, ServiceUnavailable, api_error
from riskmodel_client.types import (
    FALLBACK_CODE,
    Decision,
    OutcomePage,
    Reason,
    Receipt,
    UnreadableAnswer,
)

__all__ = [
    "batch_answer",
    "decision_answer",
    "encode",
    "fallback",
    "history_path",
    "lookup_answer",
    "page_answer",
    "receipt_answer",
    "request_id_of",
]

HISTORY_TABLES = ("users", "orders", "usage")


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # exact: "30.00" is what the API reads as thirty
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot send {type(value).__name__} {value!r} as JSON")


def encode(document: Any) -> bytes:
    """``document`` as the JSON the API reads: decimals as text, times as ISO 8601.
    Encoded once per call, so that every retry sends the very same bytes."""
    return json.dumps(document, default=_plain, separators=(",", ":")).encode()


def request_id_of(request: Mapping[str, Any]) -> str:
    return str(request.get("request_id", ""))


def fallback(request_id: str, why: str, detail: str) -> Decision:
    """The client's own review: nothing paid, sent to a person, saying why."""
    message = (
        f"the risk service gave no decision ({why}: {detail}); "
        "decided by the client: review, nothing approved"
    )
    return Decision(
        request_id=request_id,
        decision="review",
        score=None,
        approved_amount=Decimal("0.00"),
        reasons=(Reason(code=FALLBACK_CODE, kind="policy", message=message),),
        review=None,
        decided_at=datetime.now(UTC),
        stored=False,
        replayed=False,
    )


def _json(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return content.decode("utf-8", "replace")


def _caller_fault(status: int) -> bool:
    return 400 <= status < 500


def decision_answer(request_id: str, status: int, content: bytes) -> Decision:
    """The decision a final answer to ``POST /v1/decisions`` gives."""
    if status == 200:
        try:
            return Decision.from_json(_json(content))
        except UnreadableAnswer as exc:
            return fallback(request_id, "unreadable answer", str(exc))
    if _caller_fault(status):
        raise api_error(status, _json(content))
    return fallback(request_id, "server error", f"{status}: {_summary(content)}")


def batch_answer(
    request_ids: Sequence[str], status: int, content: bytes
) -> list[Decision | ApiError]:
    """The results a final answer to ``POST /v1/decisions:batch`` gives, in order."""
    if _caller_fault(status):
        raise api_error(status, _json(content))
    if status != 200:
        detail = f"{status}: {_summary(content)}"
        return [fallback(rid, "server error", detail) for rid in request_ids]
    body = _json(content)
    items = body.get("results") if isinstance(body, dict) else None
    if not isinstance(items, list) or len(items) != len(request_ids):
        detail = "not one result per request"
        return [fallback(rid, "unreadable answer", detail) for rid in request_ids]
    return [_batch_item(rid, item) for rid, item in zip(request_ids, items, strict=True)]


def _batch_item(request_id: str, item: Any) -> Decision | ApiError:
    if not isinstance(item, dict) or item.get("request_id") != request_id:
        return fallback(request_id, "unreadable answer", "results out of order")
    status = item.get("status")
    if status == 200:
        try:
            return Decision.from_json(item.get("decision"))
        except UnreadableAnswer as exc:
            return fallback(request_id, "unreadable answer", str(exc))
    if isinstance(status, int) and _caller_fault(status):
        return api_error(status, {"error": item.get("error")})
    return fallback(request_id, "server error", f"item status {status!r}")


def lookup_answer(status: int, content: bytes) -> Decision | None:
    """``GET /v1/decisions/{request_id}``: the stored decision, None if there is none."""
    if status == 404:
        body = _json(content)
        if isinstance(body, dict) and body.get("error", {}).get("code") == "not_found":
            return None
    _raise_unless_ok(status, content)
    try:
        return Decision.from_json(_json(content))
    except UnreadableAnswer as exc:
        raise ServiceUnavailable("unreadable answer", str(exc)) from exc


def page_answer(status: int, content: bytes) -> OutcomePage:
    _raise_unless_ok(status, content)
    try:
        return OutcomePage.from_json(_json(content))
    except UnreadableAnswer as exc:
        raise ServiceUnavailable("unreadable answer", str(exc)) from exc


def receipt_answer(status: int, content: bytes) -> Receipt:
    _raise_unless_ok(status, content)
    try:
        return Receipt.from_json(_json(content))
    except UnreadableAnswer as exc:
        raise ServiceUnavailable("unreadable answer", str(exc)) from exc


def _raise_unless_ok(status: int, content: bytes) -> None:
    if status == 200:
        return
    if _caller_fault(status):
        raise api_error(status, _json(content))
    raise ServiceUnavailable("server error", f"{status}: {_summary(content)}")


def history_path(table: str) -> str:
    if table not in HISTORY_TABLES:
        raise ValueError(f"table {table!r}: one of {', '.join(HISTORY_TABLES)}")
    return f"/v1/events/{table}"


def _summary(content: bytes) -> str:
    body = _json(content)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return f"{body['error'].get('code')}: {body['error'].get('message')}"
    return str(body)[:200]
