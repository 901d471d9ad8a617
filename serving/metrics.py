"""Prometheus metrics, one registry per application (tests run several apps side by side)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["REFUSALS", "Metrics"]

# Decision latency is a few milliseconds; the buckets resolve it there and show outliers.
_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

REFUSALS = (("429", "too_many_requests"), ("503", "overloaded"))
"""The back-pressure answers (``serving.pressure``): status and error code."""


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.decisions = Counter(
            "riskmodel_decisions",
            "Decisions answered, by outcome; degraded when made without a model score, "
            "features or the store; replayed when an earlier decision was returned",
            ["decision", "degraded", "replayed"],
            registry=r,
        )
        self.decision_seconds = Histogram(
            "riskmodel_decision_seconds",
            "Time to decide one request: features, model, policy and the durable write",
            buckets=_BUCKETS,
            registry=r,
        )
        self.scores = Histogram(
            "riskmodel_score",
            "Champion scores of decided requests (drift shows as a moving distribution)",
            buckets=(0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.85, 0.95, 1.0),
            registry=r,
        )
        self.shadow_scores = Histogram(
            "riskmodel_shadow_score",
            "Challenger scores, stored beside decisions and never answered",
            buckets=(0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.85, 0.95, 1.0),
            registry=r,
        )
        self.commit_groups = Histogram(
            "riskmodel_commit_group_size",
            "Decisions written per transaction (group commit): near 1 when traffic is light, "
            "larger as it grows",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.conflicts = Counter(
            "riskmodel_request_id_conflicts",
            "Requests refused because their request_id was used for another body",
            registry=r,
        )
        self.events = Counter(
            "riskmodel_events_written", "History rows written", ["table"], registry=r
        )
        self.store_up = Gauge(
            "riskmodel_store_up", "1 while the store answers, 0 while it is lost", registry=r
        )
        self.model_loaded = Gauge(
            "riskmodel_model_loaded", "1 when a champion model is loaded", registry=r
        )
        self.policy_loaded = Gauge(
            "riskmodel_policy_loaded", "1 when a valid policy is loaded", registry=r
        )
        self.kill_switch = Gauge(
            "riskmodel_kill_switch",
            "1 for the kill switch's mode in force (off, review: every decision a review, "
            "rules: decided without the model)",
            ["mode"],
            registry=r,
        )
        self.refused = Counter(
            "riskmodel_refused",
            "Decision calls refused by back-pressure before their body was read: 503 "
            "overloaded (the worker held RISKMODEL_MAX_IN_FLIGHT calls), 429 "
            "too_many_requests (the caller held its share of them)",
            ["status", "reason"],
            registry=r,
        )
        for status, reason in REFUSALS:  # shown at 0 from the start: rate() needs a base
            self.refused.labels(status, reason)
        self.reloads = Counter(
            "riskmodel_reloads",
            "Reloads asked, by what and outcome",
            ["what", "outcome"],
            registry=r,
        )
