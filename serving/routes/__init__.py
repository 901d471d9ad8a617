"""The HTTP routes, one module per resource; each route only translates HTTP to a call."""

from serving.routes import admin, decisions, events, health, reviews, users

__all__ = ["admin", "decisions", "events", "health", "reviews", "users"]
