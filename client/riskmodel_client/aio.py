"""The asynchronous client: the same calls as ``Client``, awaited.

    >>> from riskmodel_client import AsyncClient
    >>> async with AsyncClient("http://127.0.0.1:8000", api_key="rk_...") as risk:  # doctest: +SKIP
    ...     decision = await risk.decide(request)

Each attempt runs under ``asyncio.timeout``, so the budget holds to the millisecond
whatever the connection does (a server sending its answer a byte at a time included).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from riskmodel_client import answers
from riskmodel_client.errors import ApiError, ServiceUnavailable
from riskmodel_client.retry import Budget, Policy, Retry, extra_for, pause, transient
from riskmodel_client.types import Decision, Outcome, OutcomePage, Receipt

__all__ = ["AsyncClient"]

_JSON = {"content-type": "application/json"}


class AsyncClient:
    """See ``Client``; safe to share between the tasks of one event loop."""

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
        self._http = httpx.AsyncClient(
            base_url=base_url, headers={"authorization": f"Bearer {api_key}"}
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def decide(self, request: Mapping[str, Any]) -> Decision:
        """See ``Client.decide``."""
        request_id = answers.request_id_of(request)
        try:
            status, content = await self._send("POST", "/v1/decisions", answers.encode(request))
        except ServiceUnavailable as exc:
            return answers.fallback(request_id, exc.why, exc.detail)
        return answers.decision_answer(request_id, status, content)

    async def decide_many(self, requests: Sequence[Mapping[str, Any]]) -> list[Decision | ApiError]:
        """See ``Client.decide_many``."""
        request_ids = [answers.request_id_of(r) for r in requests]
        if not request_ids:
            return []
        body = answers.encode({"requests": list(requests)})
        try:
            status, content = await self._send("POST", "/v1/decisions:batch", body)
        except ServiceUnavailable as exc:
            return [answers.fallback(rid, exc.why, exc.detail) for rid in request_ids]
        return answers.batch_answer(request_ids, status, content)

    async def get_decision(self, request_id: str) -> Decision | None:
        """See ``Client.get_decision``."""
        status, content = await self._send("GET", f"/v1/decisions/{quote(request_id, safe='')}")
        return answers.lookup_answer(status, content)

    async def outcomes(self, after: int = 0, limit: int = 100, wait: float = 0.0) -> OutcomePage:
        """See ``Client.outcomes``."""
        params = {"after": str(after), "limit": str(limit), "wait": f"{wait:g}"}
        status, content = await self._send("GET", "/v1/outcomes", params=params, extra=wait)
        return answers.page_answer(status, content)

    async def follow(
        self, after: int = 0, limit: int = 100, wait: float = 30.0
    ) -> AsyncIterator[Outcome]:
        """See ``Client.follow``."""
        failures = 0
        while True:
            try:
                page = await self.outcomes(after=after, limit=limit, wait=wait)
            except ServiceUnavailable:
                failures += 1
                await asyncio.sleep(pause(self.policy, failures))
                continue
            failures = 0
            for outcome in page.outcomes:
                yield outcome
            after = page.last

    async def send_events(
        self, table: str, rows: Sequence[Mapping[str, Any]], *, timeout: float | None = None
    ) -> Receipt:
        """See ``Client.send_events``."""
        path = answers.history_path(table)
        body = answers.encode({"rows": list(rows)})
        status, content = await self._send(
            "POST", path, body, extra=extra_for(self.policy, timeout)
        )
        return answers.receipt_answer(status, content)

    async def send_labels(
        self, rows: Sequence[Mapping[str, Any]], *, timeout: float | None = None
    ) -> Receipt:
        """See ``Client.send_labels``."""
        body = answers.encode({"rows": list(rows)})
        extra = extra_for(self.policy, timeout)
        status, content = await self._send("POST", "/v1/labels", body, extra=extra)
        return answers.receipt_answer(status, content)

    async def _send(
        self,
        method: str,
        path: str,
        content: bytes | None = None,
        *,
        params: Mapping[str, str] | None = None,
        extra: float = 0.0,
    ) -> tuple[int, bytes]:
        """See ``Client._send``."""
        budget = Budget(self.policy, self.policy.budget + extra)
        headers = _JSON if content is not None else None
        while True:
            timeout = budget.attempt_timeout(extra)
            retry: Retry | None
            if timeout <= 0:
                raise ServiceUnavailable("timeout", f"no answer within {budget.budget:g} s")
            try:
                async with asyncio.timeout(timeout):
                    response = await self._http.request(
                        method,
                        path,
                        content=content,
                        params=params,
                        headers=headers,
                        timeout=timeout,
                    )
            except (httpx.TransportError, TimeoutError) as exc:
                retry = Retry.of_exception(exc)
            else:
                retry = transient(response.status_code, response.headers, response.content)
                if retry is None:
                    return response.status_code, response.content
            wait = budget.next_wait(retry)
            if wait is None:
                raise ServiceUnavailable(retry.why, retry.detail)
            await asyncio.sleep(wait)
