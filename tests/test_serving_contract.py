"""The API's contract, held both ways: inputs taken strictly as JSON types, the OpenAPI
document saying exactly what validation does, error bodies in the documented shape and of
bounded size, limits checked before the work they protect, and documentation pages that
need nothing from the internet.

Validation does not depend on the store, so one SQLite service serves the module.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from serving.errors import LISTED_PROBLEMS
from serving.schemas import MAX_BATCH_REQUESTS, MAX_BATCH_ROWS, DecisionIn, ErrorBody
from serving.settings import Settings
from tests.test_serving_fixtures import Service, body, load_tiny, make_settings, running


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp: Path = tmp_path_factory.mktemp("contract")
    url = f"sqlite:///{tmp / 'store.db'}"
    load_tiny(url)
    settings, keys = make_settings(tmp, url)
    with running(settings, keys) as service:
        yield service


@pytest.fixture(scope="module")
def document(api: Service) -> dict[str, Any]:
    response = api.client.get("/openapi.json")
    assert response.status_code == 200
    found: dict[str, Any] = response.json()
    return found


def _refused_field(response: Any) -> str:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    fields = [f["field"] for f in error["fields"]]
    assert len(fields) == 1, fields
    return str(fields[0])


# JSON has its own types, and a value of another one is refused, not converted.
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"days_used_claimed": True}, "body.days_used_claimed"),
        ({"days_used_claimed": "2"}, "body.days_used_claimed"),
        ({"days_used_claimed": 2.5}, "body.days_used_claimed"),
        ({"requested_at": 1782777287}, "body.requested_at"),
        ({"requested_at": "2023-02-31T10:00:00Z"}, "body.requested_at"),
        ({"requested_at": "2100-02-29T10:00:00Z"}, "body.requested_at"),
        ({"requested_at": "2026-01-20"}, "body.requested_at"),
        ({"requested_at": "2026-01-20T10:00:00.1234567891Z"}, "body.requested_at"),
        ({"requested_at": "1970-01-01T00:30:00+01:00"}, "body.requested_at"),
        ({"amount": "1e2"}, "body.amount"),
        ({"amount": 1.505}, "body.amount"),
        ({"amount": 0.35000000000000003}, "body.amount"),
        ({"amount": True}, "body.amount"),
        ({"amount": "0"}, "body.amount"),
        ({"amount": 0}, "body.amount"),
        ({"amount": "020.00"}, "body.amount"),
        ({"amount": " 20.00"}, "body.amount"),
        ({"amount": "1000000000.01"}, "body.amount"),
        ({"request_id": " api-1"}, "body.request_id"),
        ({"channel": "app\n"}, "body.channel"),
    ],
)
def test_a_value_of_another_json_type_or_form_is_422_naming_the_field(
    api: Service, overrides: dict[str, Any], field: str
) -> None:
    assert _refused_field(api.decide(body(**overrides))) == field


def test_a_whole_number_is_the_same_amount_however_json_spells_it(api: Service) -> None:
    # JSON Schema (and so every client generated from the document) counts 1e2 and 100.0
    # as the integer 100: refusing them would refuse what the document admits.
    first = api.decide(body(request_id="spelled", amount=100))
    assert first.status_code == 200, first.text
    for spelling in ("1e2", "100.0", "100"):
        raw = api.client.post(
            "/v1/decisions",
            content=f'{{"request_id": "spelled", "order_id": "o4", "user_id": "u2", '
            f'"requested_at": "2026-01-20T10:00:00Z", "amount": {spelling}, '
            f'"reason": "not_as_described", "device_id": "d2", "ip": "10.0.0.2", '
            f'"channel": "app"}}',
            headers=api.headers("decide") | {"Content-Type": "application/json"},
        )
        assert raw.status_code == 200, raw.text
        assert raw.json() == first.json() | {"replayed": True}


@pytest.mark.parametrize("verdict", ["yes", "true", 1, 0, None])
def test_a_verdict_is_true_or_false_and_nothing_else(api: Service, verdict: Any) -> None:
    response = api.client.post(
        "/v1/reviews/r1",
        json={"decision": "refuse", "is_abuse": verdict},
        headers=api.headers("review"),
    )
    assert _refused_field(response) == "body.is_abuse"


@pytest.mark.parametrize(
    ("sent", "stored"), [(96.45, "96.45"), (1e2, "100.00"), ("96.45", "96.45")]
)
def test_an_amount_may_be_a_json_number_of_cents(api: Service, sent: Any, stored: str) -> None:
    """Clients send money as JSON numbers: one with at most two decimals as written is the
    amount it says, not a float's neighbour."""
    response = api.decide(body(request_id=f"money-{sent}", amount=sent))

    assert response.status_code == 200, response.text
    row = api.client.get(f"/v1/decisions/money-{sent}", headers=api.headers("decide")).json()
    assert row["request_id"] == f"money-{sent}"
    history = api.client.get("/v1/users/u2/history", headers=api.headers("review")).json()
    asked = {r["request_id"]: r["amount"] for r in history["refund_requests"]}
    assert asked[f"money-{sent}"] == stored


@pytest.mark.parametrize(
    ("path", "row", "field"),
    [
        ("/v1/labels", {"request_id": "r1", "is_abuse": "yes"}, "is_abuse"),
        ("/v1/labels", {"request_id": "r1", "is_abuse": 1}, "is_abuse"),
        ("/v1/events/users", {"user_id": "u9", "phone_verified": "true"}, "phone_verified"),
        ("/v1/events/orders", {"order_id": "o9", "service_days": True}, "service_days"),
        ("/v1/events/orders", {"order_id": "o9", "amount": 30.555}, "amount"),
        ("/v1/events/usage", {"order_id": "o1", "used_at": 1767225600}, "used_at"),
    ],
)
def test_history_rows_take_json_types_strictly(
    api: Service, path: str, row: dict[str, Any], field: str
) -> None:
    complete = {
        "/v1/labels": {"labeled_at": "2026-02-01T00:00:00Z", "is_abuse": True},
        "/v1/events/users": {"registered_at": "2026-01-01T00:00:00Z"},
        "/v1/events/orders": {
            "user_id": "u1",
            "product_type": "service",
            "amount": "30.00",
            "paid_at": "2026-01-10T00:00:00Z",
        },
        "/v1/events/usage": {},
    }[path] | row
    response = api.client.post(path, json={"rows": [complete]}, headers=api.headers("ingest"))
    assert _refused_field(response) == f"body.rows.0.{field}"


def test_a_body_that_is_not_text_is_400_in_the_error_shape(api: Service) -> None:
    response = api.client.post(
        "/v1/decisions",
        content=b'{"request_id": "\xff"}',
        headers=api.headers("decide") | {"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert ErrorBody.model_validate(response.json()).error.code == "bad_request"


def test_a_reload_asks_with_booleans(api: Service) -> None:
    response = api.client.post(
        "/v1/admin/reload", json={"policy": "yes"}, headers=api.headers("admin")
    )
    assert _refused_field(response) == "body.policy"


def test_a_huge_batch_is_refused_by_its_length_before_its_items(api: Service) -> None:
    # 260,000 empty objects (780 KB, under the body limit): one problem, the list's length,
    # not six per item.
    response = api.client.post(
        "/v1/decisions:batch",
        content=b'{"requests": [' + b",".join([b"{}"] * 260_000) + b"]}",
        headers=api.headers("decide") | {"Content-Type": "application/json"},
    )
    assert _refused_field(response) == "body.requests"
    assert len(response.content) < 1_000


def test_too_many_history_rows_are_refused_by_their_length(api: Service) -> None:
    rows = b",".join([b"{}"] * (MAX_BATCH_ROWS + 1))
    response = api.client.post(
        "/v1/events/users",
        content=b'{"rows": [' + rows + b"]}",
        headers=api.headers("ingest") | {"Content-Type": "application/json"},
    )
    assert _refused_field(response) == "body.rows"


def test_an_error_lists_a_bounded_number_of_problems_and_counts_them_all(api: Service) -> None:
    # Within the schema's length: every item is validated, each missing six fields.
    response = api.client.post(
        "/v1/decisions:batch",
        json={"requests": [{}] * MAX_BATCH_REQUESTS},
        headers=api.headers("decide"),
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert len(error["fields"]) == LISTED_PROBLEMS
    assert error["message"] == (
        f"{6 * MAX_BATCH_REQUESTS} problem(s) with the request; "
        f"the first {LISTED_PROBLEMS} are listed"
    )
    assert len(response.content) < 10_000


def test_a_batch_above_the_deployments_limit_is_413(api: Service) -> None:
    limit = api.settings.max_batch
    response = api.client.post(
        "/v1/decisions:batch",
        json={"requests": [body(request_id=f"b{i}") for i in range(limit + 1)]},
        headers=api.headers("decide"),
    )
    assert response.status_code == 413
    ErrorBody.model_validate(response.json())


def test_settings_refuse_a_batch_limit_the_schema_would_not_admit() -> None:
    assert Settings(max_batch=MAX_BATCH_REQUESTS).max_batch == MAX_BATCH_REQUESTS
    with pytest.raises(ValueError, match=f"above {MAX_BATCH_REQUESTS}, the most requests"):
        Settings.from_env({"RISKMODEL_MAX_BATCH": str(MAX_BATCH_REQUESTS + 1)})


_ROUTES = {
    ("post", "/v1/decisions"): {400, 401, 403, 409, 413, 422, 429, 503},
    ("post", "/v1/decisions:batch"): {400, 401, 403, 413, 422, 429, 503},
    ("get", "/v1/decisions/{request_id}"): {401, 403, 404, 422, 429, 503},
    ("post", "/v1/events/users"): {400, 401, 403, 413, 422, 503},
    ("post", "/v1/events/orders"): {400, 401, 403, 413, 422, 503},
    ("post", "/v1/events/usage"): {400, 401, 403, 413, 422, 503},
    ("post", "/v1/labels"): {400, 401, 403, 413, 422, 503},
    ("get", "/v1/reviews"): {401, 403, 422, 503},
    ("post", "/v1/reviews/{request_id}"): {400, 401, 403, 404, 409, 413, 422, 503},
    ("post", "/v1/appeals"): {400, 401, 403, 404, 409, 413, 422, 503},
    ("get", "/v1/outcomes"): {401, 403, 422, 503},
    ("get", "/v1/users/{user_id}/history"): {401, 403, 404, 422, 503},
    ("post", "/v1/admin/reload"): {400, 401, 403, 413, 422, 503},
    ("post", "/v1/admin/switch"): {400, 401, 403, 413, 422, 503},
}


@pytest.mark.parametrize(("route", "statuses"), list(_ROUTES.items()))
def test_every_error_a_route_answers_is_documented_in_the_error_shape(
    document: dict[str, Any], route: tuple[str, str], statuses: set[int]
) -> None:
    method, path = route
    responses = document["paths"][path][method]["responses"]
    errors = {int(status) for status in responses if int(status) >= 400}
    assert errors == statuses
    for status in errors:
        schema = responses[str(status)]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}


def test_a_404_body_is_what_the_document_says(api: Service, document: dict[str, Any]) -> None:
    response = api.client.get("/v1/decisions/nothing", headers=api.headers("decide"))

    assert response.status_code == 404
    answer = ErrorBody.model_validate(response.json())
    assert answer.error.code == "not_found"
    documented = document["components"]["schemas"]["ErrorBody"]
    assert documented["required"] == ["error"]
    assert set(response.json()) == set(documented["properties"])


def _pattern(document: dict[str, Any], field: str) -> re.Pattern[str]:
    schema = document["components"]["schemas"]["DecisionIn"]["properties"][field]
    branches = schema.get("anyOf", [schema])
    texts = [b["pattern"] for b in branches if b.get("type") == "string"]
    assert len(texts) == 1
    return re.compile(texts[0])


def _valid(field: str, value: Any) -> bool:
    try:
        DecisionIn.model_validate(body(**{field: value}))
    except ValidationError:
        return False
    return True


def test_the_documented_date_pattern_is_exactly_the_calendar(document: dict[str, Any]) -> None:
    pattern = _pattern(document, "requested_at")
    for year in range(1968, 2202):
        for month in range(1, 13):
            for day in range(28, 32):
                text = f"{year}-{month:02}-{day:02}T12:00:00Z"
                real = 1970 <= year <= 2199 and day <= calendar.monthrange(year, month)[1]
                assert (pattern.search(text) is not None) == real == _valid("requested_at", text)


@pytest.mark.parametrize(
    ("text", "admitted"),
    [
        ("1970-01-01T00:30:00+01:00", False),  # 1969 in UTC
        ("1970-01-01T00:30:00-01:00", True),
        ("1970-01-01T00:30:00+00:00", True),
        ("2199-12-31T23:30:00-01:00", False),  # 2200 in UTC
        ("2199-12-31T23:30:00+01:00", True),
        ("2026-05-02 10:00+0800", True),
        ("2026-05-02T10:00:00.123456", True),
        ("2026-05-02t10:00:00z", False),
        ("2026-05-02T24:00:00Z", False),
    ],
)
def test_the_documented_date_pattern_and_validation_agree_at_the_edges(
    document: dict[str, Any], text: str, admitted: bool
) -> None:
    pattern = _pattern(document, "requested_at")
    assert (pattern.search(text) is not None) == admitted == _valid("requested_at", text)


@given(text=st.from_regex(r"[0-9.e+ -]{0,13}", fullmatch=True))
def test_the_documented_amount_pattern_is_the_check(document: dict[str, Any], text: str) -> None:
    assert (_pattern(document, "amount").search(text) is not None) == _valid("amount", text)


@given(
    text=st.text(
        alphabet=st.sampled_from(["a", "\x00", " ", "\t", "\x1c", "\x85", "\u3000", "\ufeff"]),
        min_size=1,
        max_size=4,
    )
)
def test_the_documented_identifier_pattern_is_the_check(
    document: dict[str, Any], text: str
) -> None:
    assert (_pattern(document, "request_id").search(text) is not None) == _valid("request_id", text)


class _Assets(HTMLParser):
    """The addresses a page loads: scripts, styles and icons."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        url = found.get("src") if tag == "script" else found.get("href")
        if tag in ("script", "link") and url:
            self.urls.append(url)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_documentation_pages_need_nothing_from_the_internet(api: Service, page: str) -> None:
    response = api.client.get(page)
    assert response.status_code == 200
    parser = _Assets()
    parser.feed(response.text)

    assert len(parser.urls) >= 2  # the script, and a style or an icon
    assert not re.search(r"https?://", response.text)
    for url in parser.urls:
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == ("", ""), url
        asset = api.client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1_000, url
