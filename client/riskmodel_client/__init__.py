"""The refund pipeline's client of the refund risk service.

    >>> from riskmodel_client import Client
    >>> risk = Client("http://127.0.0.1:8000", api_key="rk_...", budget=3.0)  # doctest: +SKIP
    >>> decision = risk.decide(request)                                       # doctest: +SKIP
    >>> decision.decision, decision.approved_amount                           # doctest: +SKIP
    ('approve', Decimal('22.00'))

``decide`` returns within its budget: the service's decision, or a review of its own
(reason ``CLIENT_FALLBACK``) when the service is slow, unreachable or overloaded. It never
approves what the service did not approve. Only ``httpx`` is needed.

A receiver of the service's webhooks checks each delivery with ``verify_webhook`` and reads
it with ``parse_outcome``.
"""

from riskmodel_client.aio import AsyncClient
from riskmodel_client.client import Client
from riskmodel_client.errors import (
    ApiError,
    AuthError,
    BadRequest,
    ClientError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RequestConflict,
    ServiceUnavailable,
)
from riskmodel_client.types import (
    FALLBACK_CODE,
    Decision,
    Outcome,
    OutcomePage,
    Reason,
    Receipt,
    Review,
    UnreadableAnswer,
)
from riskmodel_client.webhooks import (
    EVENT_HEADER,
    SIGNATURE_HEADER,
    parse_outcome,
    sign_webhook,
    verify_webhook,
)

__all__ = [
    "EVENT_HEADER",
    "FALLBACK_CODE",
    "SIGNATURE_HEADER",
    "ApiError",
    "AsyncClient",
    "AuthError",
    "BadRequest",
    "Client",
    "ClientError",
    "Decision",
    "InvalidRequest",
    "NotFound",
    "Outcome",
    "OutcomePage",
    "PayloadTooLarge",
    "Reason",
    "Receipt",
    "RequestConflict",
    "Review",
    "ServiceUnavailable",
    "UnreadableAnswer",
    "parse_outcome",
    "sign_webhook",
    "verify_webhook",
]
