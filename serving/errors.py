"""The service's errors and the one place they become HTTP answers.

::

    ServingError                 code              status
    ├── Unauthorized             unauthorized      401  no key, or a key nobody holds
    ├── Forbidden                forbidden         403  a key whose roles do not allow it
    ├── NotFound                 not_found         404
    ├── Conflict                 conflict          409  e.g. a request_id reused with another body
    ├── PayloadTooLarge          payload_too_large 413  body or batch above the limit
    ├── Refused                  refused           422  a model or policy that cannot go live
    ├── AheadOfClock             ahead_of_clock    422  requested_at ahead of the service's clock
    ├── CallerOverloaded         too_many_requests 429  one caller's share of calls in flight
    ├── Unavailable              unavailable       503  what the call needs is not loaded
    └── Overloaded               overloaded        503  the worker's calls in flight at the limit

Besides these, ``riskmodel.errors.DataError`` (a row breaking the dataset contract, a
policy that cannot go live) answers 422 ``invalid``, a body or parameter that fails
validation answers 422 ``invalid_request`` with one entry per field (the first
``LISTED_PROBLEMS``; the message counts them all), and a body that cannot be read as text
answers 400 ``bad_request``. Every error body has one shape (``serving.schemas.ErrorBody``,
which the OpenAPI document gives for every status ``documented_errors`` lists)::

    {"error": {"code": "conflict", "message": "...",
               "fields": [{"field": "...", "message": "..."}]}}

A store that cannot be reached (a connection refused or lost) answers 503 ``unavailable``
and tells the service's store link, which then answers degraded until it is back.
Anything else is a bug: 500 ``internal``, without its details (they go to the log).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Send

from riskmodel.errors import DataError, DatasetError
from riskmodel.policy import PolicyError
from serving.schemas import ErrorBody

__all__ = [
    "LISTED_PROBLEMS",
    "AheadOfClock",
    "CallerOverloaded",
    "Conflict",
    "Forbidden",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "Refused",
    "ServingError",
    "Unauthorized",
    "Unavailable",
    "documented_errors",
    "error_body",
    "install_error_handlers",
    "send_error",
]

log = logging.getLogger("serving")

LISTED_PROBLEMS = 50
"""The most field problems an error lists: a body with thousands of bad items is answered
in a few kilobytes, and the message says how many there were."""


class ServingError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, fields: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or []


class Unauthorized(ServingError):
    status, code = 401, "unauthorized"


class Forbidden(ServingError):
    status, code = 403, "forbidden"


class NotFound(ServingError):
    status, code = 404, "not_found"


class Conflict(ServingError):
    status, code = 409, "conflict"


class PayloadTooLarge(ServingError):
    status, code = 413, "payload_too_large"


class Refused(ServingError):
    status, code = 422, "refused"


class AheadOfClock(ServingError):
    """A well-formed request dated later than the service's clock allows."""

    status, code = 422, "ahead_of_clock"


class CallerOverloaded(ServingError):
    """One caller holds its share of a worker's decision calls (``serving.pressure``)."""

    status, code = 429, "too_many_requests"


class Unavailable(ServingError):
    status, code = 503, "unavailable"


class Overloaded(ServingError):
    """The worker holds as many decision calls as it may (``serving.pressure``)."""

    status, code = 503, "overloaded"


def error_body(code: str, message: str, fields: list[dict[str, str]] | None = None) -> Any:
    """The error shape every failing call answers with."""
    return {"error": {"code": code, "message": message, "fields": fields or []}}


async def send_error(
    send: Send, error: ServingError, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """``error`` answered from ASGI middleware, before the application (and before the
    body is read): so the connection is closed after it, as it cannot carry another."""
    payload = json.dumps(error_body(error.code, error.message, error.fields)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


_MEANINGS = {
    400: "the body cannot be read as text (bad_request)",
    401: "no key, or an unknown key (unauthorized)",
    403: "the key's roles do not allow the call (forbidden)",
    404: "no such resource (not_found)",
    409: "in conflict with what is stored (conflict)",
    413: "a body above RISKMODEL_MAX_BODY_BYTES, or a batch above its limit (payload_too_large)",
    422: "the body or a parameter fails validation, one entry per field (invalid_request)",
    503: "the store is unavailable; send again later (unavailable)",
}


def documented_errors(
    *statuses: int, meanings: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route that can answer ``statuses``, each in the error shape.

    >>> sorted(documented_errors(401, 404, meanings={404: "no such user"}))
    [401, 404]
    """
    chosen = {**_MEANINGS, **(meanings or {})}
    return {status: {"model": ErrorBody, "description": chosen[status]} for status in statuses}


def _field_name(location: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in location)


def _validation_answer(exc: RequestValidationError) -> Any:
    problems = exc.errors()
    fields = [
        {"field": _field_name(problem.get("loc", ())), "message": str(problem.get("msg", ""))}
        for problem in problems[:LISTED_PROBLEMS]
    ]
    message = f"{len(problems)} problem(s) with the request"
    if len(problems) > LISTED_PROBLEMS:
        message += f"; the first {LISTED_PROBLEMS} are listed"
    return error_body("invalid_request", message, fields)


def _data_fields(exc: DataError) -> list[dict[str, str]]:
    if isinstance(exc, DatasetError):
        where = [exc.table] + ([f"row {exc.row}"] if exc.row is not None else [])
        if exc.column is not None:
            where.append(exc.column)
        return [{"field": ".".join(where), "message": exc.problem}]
    if isinstance(exc, PolicyError):
        return [{"field": exc.file, "message": str(problem)} for problem in exc.problems]
    return []


def _allowed(request: Request) -> list[str]:
    """Every method some route serves on the request's path."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE and isinstance(route, APIRoute):
            methods |= route.methods or set()
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to its status and the one error shape."""

    async def serving(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServingError)
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
        return JSONResponse(
            error_body(exc.code, exc.message, exc.fields), exc.status, headers=headers
        )

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse(_validation_answer(exc), 422)

    async def data(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DataError)
        return JSONResponse(error_body("invalid", str(exc), _data_fields(exc)), 422)

    async def http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        headers = exc.headers
        if exc.status_code == 405:  # Starlette names the first route's methods only
            headers = {**(headers or {}), "Allow": ", ".join(_allowed(request))}
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=headers)

    async def store_lost(request: Request, exc: Exception) -> JSONResponse:
        runtime = getattr(request.app.state, "runtime", None)
        if runtime is not None:
            runtime.store.lost(exc)
            runtime.note_state()
        return JSONResponse(error_body("unavailable", "the store is unavailable; retry"), 503)

    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal", "internal error; it has been logged"), 500)

    app.add_exception_handler(ServingError, serving)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(DataError, data)
    app.add_exception_handler(StarletteHTTPException, http)
    app.add_exception_handler(OperationalError, store_lost)
    app.add_exception_handler(InterfaceError, store_lost)
    app.add_exception_handler(Exception, bug)
