"""Dependencies the routes declare: the runtime, and the caller with a role."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from serving.auth import Caller, Role
from serving.errors import Forbidden, Unauthorized
from serving.runtime import Runtime

__all__ = [
    "Admin",
    "CurrentRuntime",
    "Decider",
    "Ingester",
    "Reader",
    "Reviewer",
    "get_runtime",
    "requires",
]

# Declared for the OpenAPI document; the check itself is ``requires`` (401 / 403 in the
# service's error shape rather than FastAPI's).
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <key>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the key, alone")


async def get_runtime(request: Request) -> Runtime:
    # Async although it awaits nothing: FastAPI runs a plain ``def`` dependency on a worker
    # thread, a thread hop on every request for one attribute read.
    runtime: Runtime = request.app.state.runtime
    return runtime


CurrentRuntime = Annotated[Runtime, Depends(get_runtime)]


def requires(*roles: Role) -> Callable[..., Awaitable[Caller]]:
    """A dependency giving the caller, if its key holds one of ``roles`` (or admin).

    The key itself was checked at the door (``serving.gate``), before the body was read;
    the two security parameters only declare it in the OpenAPI document.
    """
    wanted = " or ".join(r.value for r in roles)

    async def caller(
        request: Request,
        _declared_bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        _declared_key: Annotated[str | None, Security(_header)],
    ) -> Caller:
        found: Caller | None = getattr(request.state, "caller", None)
        if found is None:
            # A route outside the gate's prefix: a mistake in the routes, refused closed.
            raise Unauthorized("an API key is required (Authorization: Bearer <key>)")
        if not found.may(*roles):
            raise Forbidden(f"caller {found.name!r} lacks the role {wanted}")
        return found

    return caller


Decider = Annotated[Caller, Depends(requires(Role.DECIDE))]
Reader = Annotated[Caller, Depends(requires(Role.DECIDE, Role.REVIEW))]
Ingester = Annotated[Caller, Depends(requires(Role.INGEST))]
Reviewer = Annotated[Caller, Depends(requires(Role.REVIEW))]
Admin = Annotated[Caller, Depends(requires(Role.ADMIN))]
