"""The HTTP routes, one module per resource; each route only translates HTTP to a call.

The decision routes run on the event loop (a millisecond of CPU, see ``serving.decide``);
the others are plain functions, which FastAPI runs on its thread pool, so that a verdict's
or a history batch's write never holds up the decisions waiting behind it."""

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

__all__ = [
    "admin",
    "appeals",
    "decisions",
    "events",
    "health",
    "outcomes",
    "reviews",
    "rules",
    "users",
    "webhooks",
]
