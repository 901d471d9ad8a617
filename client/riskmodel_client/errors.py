"""The client's errors.

::

    ClientError
    ├── ApiError                 the service refused the call: the caller's own doing
    │   ├── BadRequest           400  the body cannot be read
    │   ├── AuthError            401 / 403  no key, an unknown key, or a role that does not allow it
    │   ├── NotFound             404
    │   ├── RequestConflict      409  the request_id was already decided for another request
    │   ├── PayloadTooLarge      413  a body or batch above the service's limit
    │   └── InvalidRequest       422  a field fails validation (``fields`` say which)
    └── ServiceUnavailable       the service did not answer usefully within the budget
                                 (timeout, unreachable, overloaded, a server error)

``decide`` and ``decide_many`` never raise ``ServiceUnavailable``: they return a review
(``CLIENT_FALLBACK``) instead. Every other call raises it once its budget is spent.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "AuthError",
    "BadRequest",
    "ClientError",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "RequestConflict",
    "ServiceUnavailable",
    "api_error",
]


class ClientError(Exception):
    """Anything the client raises."""


class ApiError(ClientError):
    """The service answered with an error that sending again will not change."""

    def __init__(
        self, status: int, code: str, message: str, fields: tuple[dict[str, str], ...] = ()
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields


class BadRequest(ApiError):
    pass


class AuthError(ApiError):
    pass


class NotFound(ApiError):
    pass


class RequestConflict(ApiError):
    """The same ``request_id`` was decided for another request: a bug in the caller's ids,
    never something to retry."""


class PayloadTooLarge(ApiError):
    pass


class InvalidRequest(ApiError):
    pass


class ServiceUnavailable(ClientError):
    """No useful answer within the budget; ``why`` is ``timeout``, ``unreachable``,
    ``overloaded`` or ``server error``."""

    def __init__(self, why: str, detail: str) -> None:
        super().__init__(f"{why}: {detail}")
        self.why = why
        self.detail = detail


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: AuthError,
    403: AuthError,
    404: NotFound,
    409: RequestConflict,
    413: PayloadTooLarge,
    422: InvalidRequest,
}


def api_error(status: int, body: Any) -> ApiError:
    """The error for an answer of ``status`` whose body is ``body`` (the service's error
    shape, or anything else from something in between)."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code", "error"))
        message = str(error.get("message", ""))
        fields = tuple(f for f in error.get("fields") or () if isinstance(f, dict))
    else:
        code, message, fields = "error", str(body)[:500], ()
    return _BY_STATUS.get(status, ApiError)(status, code, message, fields)
