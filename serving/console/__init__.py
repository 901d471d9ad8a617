"""The review console: pages for reviewers and support staff at ``/console``.

    >>> from fastapi import FastAPI
    >>> from serving.console import install
    >>> install(FastAPI())

Server-rendered (Jinja2 templates under ``serving/templates/console``), no script, one
style sheet. People sign in with an account of the store (``riskmodel accounts``), not an
API key; the key gate guards ``/v1/`` only. One module a job:

- ``accounts``: accounts, roles, scrypt password hashes; ``create_account`` for Python.
- ``session``: the signed session cookie, the shared secret, CSRF tokens.
- ``web``: what every page shares: roles, forms, rendering, security headers, refusals.
- ``queue``: open cases filtered, counted and paged in SQL; claims.
- ``cases``: what a case page shows.
- ``levels``: review service levels, on a page and as Prometheus gauges.
- ``pages``: the routes. ``commands``: ``riskmodel accounts``.
"""

from __future__ import annotations

from fastapi import FastAPI

from serving.console.accounts import create_account
from serving.console.levels import LevelsCollector
from serving.console.web import ConsoleSettings, ConsoleState, install_handlers
from serving.runtime import Runtime

__all__ = ["ConsoleSettings", "attach", "create_account", "install"]


def install(app: FastAPI, settings: ConsoleSettings | None = None) -> None:
    """Add the console's routes and refusing pages to ``app``; settings default to the
    environment's (``ConsoleSettings.from_env``)."""
    from serving.console.pages import router

    app.state.console = ConsoleState(settings or ConsoleSettings.from_env())
    install_handlers(app)
    app.include_router(router)


def attach(runtime: Runtime) -> None:
    """Publish the review service levels on ``runtime``'s ``/metrics``."""
    runtime.metrics.registry.register(LevelsCollector(runtime.store.available))
