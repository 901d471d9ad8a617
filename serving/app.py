"""The application factory.

    >>> from serving.app import create_app
    >>> from serving.settings import Settings
    >>> app = create_app(Settings(database_url="sqlite:///data/riskmodel.db"))  # doctest: +SKIP

``uvicorn --factory serving.app:create_app`` serves it with settings from the
environment. The lifespan opens the store and loads the champion (and challenger) model
and the policy once; a reload (``POST /v1/admin/reload``) swaps them without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import DBAPIError

from serving import console
from serving.errors import install_error_handlers
from serving.gate import KeyGate
from serving.limits import BodyLimit
from serving.live import apply, follow, keep_policy, read_change
from serving.pressure import limit
from serving.routes import (
    admin,
    appeals,
    decisions,
    events,
    health,
    outcomes,
    reviews,
    rules,
    users,
    webhooks,
)
from serving.runtime import Runtime, read_threads
from serving.settings import Settings
from serving.warm import rehearse, settle_heap
from serving.webhooks import deliver_forever

__all__ = ["create_app"]

_DESCRIPTION = """Decisions on refund requests (approve, review, block) with their reasons,
the history they are made from, the review queue, and operations. Every call under `/v1/`
needs an API key (`Authorization: Bearer <key>`) whose roles allow it; `/healthz`,
`/readyz`, `/metrics`, the published refund rules (`/rules`) and the documentation are
open. See docs/api.md."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new application; ``settings`` default to ``Settings.from_env()``."""
    chosen = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Sized so that the store's pool holds a connection for every thread.
        asyncio.get_running_loop().set_default_executor(read_threads())
        runtime = Runtime.start(chosen)
        # What the store says is live, before the first decision; then followed.
        try:
            change = read_change(runtime)
        except DBAPIError as exc:
            runtime.live_problem = f"cannot read what is live: {exc.orig or exc}"
        else:
            if change is not None:
                apply(runtime, change)
        keep_policy(runtime)
        rehearse(runtime, every_connection=True)
        settle_heap()
        app.state.runtime = runtime
        console.attach(runtime)  # the review service levels on /metrics
        tasks = [
            asyncio.create_task(follow(runtime, chosen.follow_seconds)),
            asyncio.create_task(deliver_forever(runtime)),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            runtime.close()

    # /docs and /redoc load Swagger UI and ReDoc from files installed with the package,
    # not from a CDN: they work without internet and send nothing out, and Swagger UI's
    # online validator (which would send it the document's address) is off.
    app = FastAPIOffline(
        swagger_ui_parameters={"validatorUrl": None},
        title="Refund risk service",
        version="1",
        description=_DESCRIPTION,
        lifespan=lifespan,
        # A redirect to the same path with a slash would be built from the Host header.
        redirect_slashes=False,
    )
    install_error_handlers(app)
    for module in (
        decisions,
        events,
        reviews,
        appeals,
        outcomes,
        webhooks,
        users,
        admin,
        health,
        rules,
    ):
        app.include_router(module.router)
    console.install(app)  # /console: people signed in, not keys
    app.add_middleware(BodyLimit, max_bytes=chosen.max_body_bytes)
    limit(app, chosen.max_in_flight)  # decision calls in flight: before the body is read
    app.add_middleware(KeyGate)  # added last, so outermost: before the body is read
    return app
