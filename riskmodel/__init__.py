"""The core of the refund risk service: domain types, the dataset contract, the event store.

Imports run one way: ``serving`` and ``training`` build on ``features``, which builds on
this package; nothing here imports them.
"""

from riskmodel.domain import (
    Decision,
    Label,
    LabelSource,
    Order,
    ProductType,
    RefundReason,
    RefundRequest,
    UsageDay,
    User,
)
from riskmodel.errors import DataError, DatasetError, RiskModelError, SchemaVersionError, StoreError

__all__ = [
    "DataError",
    "DatasetError",
    "Decision",
    "Label",
    "LabelSource",
    "Order",
    "ProductType",
    "RefundReason",
    "RefundRequest",
    "RiskModelError",
    "SchemaVersionError",
    "StoreError",
    "UsageDay",
    "User",
]
