"""The decision policy risk managers own: thresholds, rules, lists, queues, refund terms.

    >>> from riskmodel.policy import STARTER_POLICY, load_policy
    >>> fields = ["order_earlier_refunds", "amount"]                 # doctest: +SKIP
    >>> load_policy(STARTER_POLICY, fields).version                 # doctest: +SKIP
    'starter-3'

The file format, the condition language and every reason code are in ``docs/policy.md``.
"""

from pathlib import Path

from riskmodel.policy.conditions import Condition, ConditionError, Kind, parse_condition
from riskmodel.policy.loader import (
    LIST_KINDS,
    KnownField,
    Policy,
    PolicyError,
    Problem,
    load_policy,
    parse_policy,
)
from riskmodel.policy.schema import PolicySpec

STARTER_POLICY = Path(__file__).with_name("starter.yaml")
"""The starter policy shipped with the package (placeholder thresholds)."""

__all__ = [
    "LIST_KINDS",
    "STARTER_POLICY",
    "Condition",
    "ConditionError",
    "Kind",
    "KnownField",
    "Policy",
    "PolicyError",
    "PolicySpec",
    "Problem",
    "load_policy",
    "parse_condition",
    "parse_policy",
]
