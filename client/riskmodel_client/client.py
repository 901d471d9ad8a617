"""The synchronous client.

>>> from riskmodel_client import Client
>>> with Client("http://127.0.0.1:8000", api_key="rk_...") as risk:   # doctest: +SKIP
...     decision = risk.decide({"request_id": "r1", "order_id": "o1", "user_id": "u1",
...         "requested_at": "2026-05-02T10:00:00Z", "amount": "30.00",
...         "reason": "unused"})
...     if decision.approved:
...         pay(decision.approved_amount)
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from riskmodel_client import answers
from riskmodel_client.errors import ApiError, ServiceUnavailable
from riskmodel_client.retry import Budget, Policy, Retry, extra_for, pause, transient
from riskmodel_client.types import Decision, Outcome, OutcomePage, Receipt

__all__ = ["Client"]

_JSON = {"content-type": "application/json"}


class Client:
    """The refund risk service over HTTP, for one thread at a time (an ``httpx.Client``
    keeps its connections alive between calls).

    ``timeout``: seconds for one attempt; ``budget``: seconds for a whole call, retries
    included. ``decide`` and ``decide_many`` answer within ``budget`` whatever the service
    does: its decision, or a review of the client's own (``Decision.is_fallback``).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 2.0,
        budget: float = 5.0,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
    ) -> None:
        self.policy = Policy(timeout, budget, backoff, max_backoff)
        self._http = httpx.Client(base_url=base_url, headers={"authorization": f"Bearer {api_key}"})

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- decisions ----------------------------------------------------------------------

    def decide(self, request: Mapping[str, Any]) -> Decision:
        """The decision on one refund request (the refund_requests fields; amounts may be
        ``Decimal``, times ``datetime``). Raises ``ApiError`` for what the caller must fix
        (``RequestConflict`` for a request_id reused with another request)."""
        request_id = answers.request_id_of(request)
        try:
            status, content = self._send("POST", "/v1/decisions", answers.encode(request))
        except ServiceUnavailable as exc:
            return answers.fallback(request_id, exc.why, exc.detail)
        return answers.decision_answer(request_id, status, content)

    def decide_many(self, requests: Sequence[Mapping[str, Any]]) -> list[Decision | ApiError]:
        """Decisions on many requests in one call, in order. A request refused on its own
        (409 conflict, 422 ahead of the service's clock) is its error, returned in its
        place, not raised: the others' decisions stand."""
        request_ids = [answers.request_id_of(r) for r in requests]
        if not request_ids:
            return []
        body = answers.encode({"requests": list(requests)})
        try:
            status, content = self._send("POST", "/v1/decisions:batch", body)
        except ServiceUnavailable as exc:
            return [answers.fallback(rid, exc.why, exc.detail) for rid in request_ids]
        return answers.batch_answer(request_ids, status, content)

    def get_decision(self, request_id: str) -> Decision | None:
        """The stored decision of ``request_id``, None if it has none."""
        status, content = self._send("GET", f"/v1/decisions/{quote(request_id, safe='')}")
        return answers.lookup_answer(status, content)

    # -- outcomes -----------------------------------------------------------------------

    def outcomes(self, after: int = 0, limit: int = 100, wait: float = 0.0) -> OutcomePage:
        """Final outcomes after position ``after``; with ``wait``, the service holds the
        call up to that many seconds until one comes (a long poll)."""
        params = {"after": str(after), "limit": str(limit), "wait": f"{wait:g}"}
        status, content = self._send("GET", "/v1/outcomes", params=params, extra=wait)
        return answers.page_answer(status, content)

    def follow(self, after: int = 0, limit: int = 100, wait: float = 30.0) -> Iterator[Outcome]:
        """Every outcome after ``after``, forever, by long polls. A service that does not
        answer is asked again (backing off up to ``max_backoff``); keep ``outcome.seq`` to
        start from after a restart."""
        failures = 0
        while True:
            try:
                page = self.outcomes(after=after, limit=limit, wait=wait)
            except ServiceUnavailable:
                failures += 1
                time.sleep(pause(self.policy, failures))
                continue
            failures = 0
            yield from page.outcomes
            after = page.last

    # -- history and labels -------------------------------------------------------------

    def send_events(
        self, table: str, rows: Sequence[Mapping[str, Any]], *, timeout: float | None = None
    ) -> Receipt:
        """History rows of ``table`` (users, orders or usage), upserted: sending them again
        changes nothing. ``timeout`` for a large batch (default: the client's)."""
        path = answers.history_path(table)
        body = answers.encode({"rows": list(rows)})
        status, content = self._send("POST", path, body, extra=extra_for(self.policy, timeout))
        return answers.receipt_answer(status, content)

    def send_labels(
        self, rows: Sequence[Mapping[str, Any]], *, timeout: float | None = None
    ) -> Receipt:
        """Labels (request_id, is_abuse, labeled_at, source), upserted."""
        body = answers.encode({"rows": list(rows)})
        status, content = self._send(
            "POST", "/v1/labels", body, extra=extra_for(self.policy, timeout)
        )
        return answers.receipt_answer(status, content)

    # -- the one loop -------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        content: bytes | None = None,
        *,
        params: Mapping[str, str] | None = None,
        extra: float = 0.0,
    ) -> tuple[int, bytes]:
        """The final answer (status, body) to the call, sent again while that may help;
        ``ServiceUnavailable`` once the budget (plus ``extra``) cannot cover another try."""
        budget = Budget(self.policy, self.policy.budget + extra)
        headers = _JSON if content is not None else None
        while True:
            timeout = budget.attempt_timeout(extra)
            retry: Retry | None
            if timeout <= 0:
                raise ServiceUnavailable("timeout", f"no answer within {budget.budget:g} s")
            try:
                response = self._http.request(
                    method, path, content=content, params=params, headers=headers, timeout=timeout
                )
            except httpx.TransportError as exc:
                retry = Retry.of_exception(exc)
            else:
                retry = transient(response.status_code, response.headers, response.content)
                if retry is None:
                    return response.status_code, response.content
            wait = budget.next_wait(retry)
            if wait is None:
                raise ServiceUnavailable(retry.why, retry.detail)
            time.sleep(wait)
