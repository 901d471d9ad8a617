"""The HTTP routes, one module per resource; each route only translates HTTP to a call."""

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
