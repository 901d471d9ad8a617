"""The review console's rules, with the test client: who may see and do what, sessions and
CSRF, claims and their lapse, the password hash, the queue's filters and counts, escaping.

The same console in a real browser: ``tests/test_console_browser.py``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Engine, insert, update

from riskmodel import dataset, store, units
from riskmodel.ingest import ingest_tables
from riskmodel.store.schema import accounts, decisions
from serving.console import session
from serving.console.accounts import (
    LOCK_AFTER,
    AccountError,
    check_password,
    create_account,
    disable_account,
    hash_password,
    list_accounts,
    sign_in,
)
from tests.test_serving_fixtures import Service, load_tiny, make_settings, running

PASSWORD = "correct horse battery"
HOSTILE = "<script>alert(1)</script>"
NOW = datetime.now(UTC)


def seed_cases(url: str) -> None:
    """The tiny history, plus a buyer whose id is markup, and decisions sent to review:
    r1 (membership, ordinary queue, due tomorrow), r2 (card code, disputes, overdue),
    r4 (the hostile buyer's service order), r3 approved automatically."""
    load_tiny(url)
    extra = {
        "users": pd.DataFrame({"user_id": [HOSTILE], "registered_at": ["2026-01-01T00:00:00Z"]}),
        "orders": pd.DataFrame(
            {
                "order_id": ["o9"],
                "user_id": [HOSTILE],
                "product_type": ["service"],
                "amount": ["80.00"],
                "paid_at": ["2026-01-09T10:00:00Z"],
                "device_id": ["d1"],
            }
        ),
        "refund_requests": pd.DataFrame(
            {
                "request_id": ["r4"],
                "order_id": ["o9"],
                "user_id": [HOSTILE],
                "requested_at": ["2026-01-11T10:00:00Z"],
                "amount": ["80.00"],
                "reason": ["not_as_described"],
            }
        ),
    }
    engine = store.open_store(url)
    try:
        ingest_tables(engine, {k: dataset.normalise(k, v) for k, v in extra.items()})
        with engine.begin() as conn:
            for request_id, queue, due, decision, score in [
                ("r1", "ordinary", NOW + timedelta(hours=20), "review", 0.41),
                ("r2", "disputes", NOW - timedelta(hours=3), "review", 0.66),
                ("r4", "ordinary", NOW + timedelta(hours=30), "review", 0.35),
                ("r3", None, None, "approve", 0.02),
            ]:
                conn.execute(
                    insert(decisions).values(
                        **decision_row(request_id, queue, due, decision, score)
                    )
                )
    finally:
        engine.dispose()


def decision_row(
    request_id: str, queue: str | None, due: datetime | None, decision: str, score: float
) -> dict[str, Any]:
    reasons = [
        {
            "code": "RULE_REPEAT_REFUND",
            "kind": "rule",
            "message": "an earlier refund of this order",
        },
        {
            "code": "MODEL_SCORE",
            "kind": "model",
            "message": "the model's score",
            "feature": "account_age_days",
            "value": 3.0,
            "contribution": 0.21,
        },
    ]
    return {
        "request_id": request_id,
        "decision": decision,
        "score": score,
        "approved_amount": 0,
        "reasons": json.dumps(reasons),
        "review_queue": queue,
        "review_due_at": None if due is None else units.micros(due),
        "model_version": "m1",
        "policy_version": "p1",
        "policy_hash": None,
        "feature_version": "f1",
        "decided_at": units.micros(NOW - timedelta(hours=4)),
        "request_hash": f"hash-{request_id}",
        "shadow": None,
    }


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp_path = tmp_path_factory.mktemp("console")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    seed_cases(url)
    engine = store.open_store(url)
    try:
        for name, role in [("ana", "reviewer"), ("ben", "reviewer"), ("sam", "support")]:
            create_account(engine, name, role, PASSWORD)
    finally:
        engine.dispose()
    settings, keys = make_settings(tmp_path, url)
    with running(settings, keys) as svc:
        yield svc


def _engine(svc: Service) -> Engine:
    engine: Engine = svc.client.app.state.runtime.store.available()  # type: ignore[attr-defined]
    return engine


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def sign_in_as(svc: Service, name: str, password: str = PASSWORD) -> Any:
    svc.client.cookies.clear()
    form = svc.client.get("/console/login")
    return svc.client.post(
        "/console/login",
        data={"name": name, "password": password, "csrf": _csrf(form.text), "then": ""},
        follow_redirects=False,
    )


# --- passwords and accounts --------------------------------------------------------------------


def test_a_password_hash_is_salted_slow_and_checked() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    started = time.perf_counter()
    assert check_password(PASSWORD, first)
    took = time.perf_counter() - started

    assert first != second  # a new salt each time
    scheme, n, r, p, salt, digest = first.split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", 2**14, 8, 1)
    assert len(bytes.fromhex(salt)) == 16
    assert len(bytes.fromhex(digest)) == 32
    assert PASSWORD not in first
    assert not check_password("correct horse battery!", first)
    assert not check_password(PASSWORD, "md5$abc")
    assert took > 0.005  # scrypt at N=2**14: tens of milliseconds, not microseconds


def test_accounts_are_created_listed_and_disabled() -> None:
    engine = store.open_store("sqlite://")
    try:
        create_account(engine, "kim", "support", PASSWORD)
        with pytest.raises(AccountError, match="exists already"):
            create_account(engine, "kim", "support", PASSWORD)
        with pytest.raises(AccountError, match="role"):
            create_account(engine, "lee", "admin", PASSWORD)
        with pytest.raises(AccountError, match="at least"):
            create_account(engine, "lee", "reviewer", "short")
        assert sign_in(engine, "kim", PASSWORD) is not None
        assert sign_in(engine, "kim", "wrong password") is None
        assert sign_in(engine, "nobody", PASSWORD) is None
        disable_account(engine, "kim")
        assert sign_in(engine, "kim", PASSWORD) is None
        [kim] = list_accounts(engine)
        assert not kim.active
    finally:
        engine.dispose()


def test_a_session_cookie_is_signed_and_expires() -> None:
    secret = bytes(range(32))
    cookie = session.issue(secret, "ana", now=1_000, hours=12)
    opened = session.open_cookie(secret, cookie, now=1_001)

    assert opened is not None
    assert opened.name == "ana"
    assert session.open_cookie(secret, cookie, now=1_000 + 12 * 3600) is None  # expired
    assert session.open_cookie(bytes(32), cookie, now=1_001) is None  # another secret
    _payload, _, signature = cookie.rpartition(".")
    forged = session.issue(secret, "ben", now=1_000, hours=12).rpartition(".")[0]
    assert session.open_cookie(secret, f"{forged}.{signature}", now=1_001) is None
    assert session.check_csrf(secret, opened, session.csrf_token(secret, opened))
    assert not session.check_csrf(secret, opened, None)
    assert not session.check_csrf(secret, opened, "0" * 64)


# --- signing in ------------------------------------------------------------------------------


def test_without_a_session_a_page_sends_to_the_sign_in_page(console: Service) -> None:
    console.client.cookies.clear()
    answer = console.client.get("/console/queue?queue=disputes", follow_redirects=False)

    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login?then=%2Fconsole%2Fqueue%3Fqueue%3Ddisputes"


def test_signing_in_sets_a_strict_cookie_and_goes_to_the_role_s_page(console: Service) -> None:
    answer = sign_in_as(console, "ana")

    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/queue"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{session.COOKIE}=")
    for part in ("HttpOnly", "Path=/console", "SameSite=lax", "Max-Age=43200"):
        assert part.lower() in cookie.lower()
    assert "secure" not in cookie.lower()  # plain http here; https adds Secure
    assert sign_in_as(console, "sam").headers["location"] == "/console/search"


def test_over_https_the_cookie_is_secure(console: Service) -> None:
    console.client.cookies.clear()
    form = console.client.get("https://testserver/console/login")
    answer = console.client.post(
        "https://testserver/console/login",
        data={"name": "ana", "password": PASSWORD, "csrf": _csrf(form.text)},
        follow_redirects=False,
    )

    assert answer.status_code == 303
    assert "secure" in answer.headers["set-cookie"].lower()


def test_wrong_passwords_in_a_row_lock_the_account_for_a_while() -> None:
    engine = store.open_store("sqlite://")
    create_account(engine, "lee", "reviewer", PASSWORD)
    for _ in range(LOCK_AFTER - 1):
        assert sign_in(engine, "lee", "not the password") is None
    assert sign_in(engine, "lee", PASSWORD) is not None  # a success starts over
    for _ in range(LOCK_AFTER):
        assert sign_in(engine, "lee", "not the password") is None

    assert sign_in(engine, "lee", PASSWORD) is None  # locked, the right one too
    with engine.begin() as conn:
        conn.execute(update(accounts).values(locked_until=1))  # the wait is over
    assert sign_in(engine, "lee", PASSWORD) is not None


def test_signing_out_ends_the_session_and_its_copies(console: Service) -> None:
    sign_in_as(console, "ben")
    copied = console.client.cookies[session.COOKIE]
    page = console.client.get("/console/queue")
    assert page.status_code == 200

    out = console.client.post(
        "/console/logout", data={"csrf": _csrf(page.text)}, follow_redirects=False
    )

    assert out.headers["location"] == "/console/login"
    console.client.cookies.set(session.COOKIE, copied, path="/console")
    replayed = console.client.get("/console/queue", follow_redirects=False)
    assert replayed.status_code == 303  # the copy ended with the sign-out
    assert sign_in_as(console, "ben").status_code == 303
    assert console.client.get("/console/queue").status_code == 200  # a new session is good


def test_a_form_posted_after_the_session_ended_goes_to_the_console(console: Service) -> None:
    console.client.cookies.clear()
    answer = console.client.post(
        "/console/cases/r1/claim", data={"csrf": "x"}, follow_redirects=False
    )

    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login?then=%2Fconsole"


def test_a_wrong_password_or_a_disabled_account_is_refused(console: Service) -> None:
    assert sign_in_as(console, "ana", "not the password").status_code == 401
    engine = _engine(console)
    create_account(engine, "gone", "reviewer", PASSWORD)
    assert sign_in_as(console, "gone").status_code == 303
    assert console.client.get("/console/queue").status_code == 200
    disable_account(engine, "gone")

    # The open session stops at its next page; signing in again is refused.
    assert console.client.get("/console/queue", follow_redirects=False).status_code == 303
    assert sign_in_as(console, "gone").status_code == 401


def test_the_sign_in_form_needs_its_token(console: Service) -> None:
    console.client.cookies.clear()
    console.client.get("/console/login")
    answer = console.client.post(
        "/console/login", data={"name": "ana", "password": PASSWORD}, follow_redirects=False
    )
    assert answer.status_code == 403
    assert "security token" in answer.text


# --- roles and CSRF --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "path", "status"),
    [
        ("ana", "/console/queue", 200),
        ("ana", "/console/cases/r1", 200),
        ("ana", "/console/search?q=u1", 200),
        ("ana", "/console/users/u1", 200),
        ("ana", "/console/service-levels", 200),
        ("sam", "/console/queue", 403),
        ("sam", "/console/cases/r1", 200),
        ("sam", "/console/search?q=u1", 200),
        ("sam", "/console/users/u1", 200),
        ("sam", "/console/service-levels", 200),
        ("ana", "/console/cases/nothing-here", 404),
        ("ana", "/console/users/nobody", 404),
    ],
)
def test_each_role_sees_its_pages(console: Service, who: str, path: str, status: int) -> None:
    sign_in_as(console, who)
    answer = console.client.get(path)

    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["referrer-policy"] == "same-origin"
    csp = answer.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src" not in csp
    assert "<script" not in answer.text.replace("&lt;script", "")


def test_support_cannot_decide_or_claim(console: Service) -> None:
    sign_in_as(console, "sam")
    csrf = _csrf(console.client.get("/console/cases/r1").text)
    decided = console.client.post(
        "/console/cases/r1/verdict",
        data={"csrf": csrf, "outcome": "full", "abuse": "no"},
        follow_redirects=False,
    )
    claimed = console.client.post("/console/cases/r1/claim", data={"csrf": csrf})

    assert decided.status_code == 403
    assert "does not allow" in decided.text
    assert claimed.status_code == 403
    assert "Record the verdict" not in console.client.get("/console/cases/r1").text


@pytest.mark.parametrize("token", [None, "", "0" * 64])
def test_a_form_without_its_token_is_refused(console: Service, token: str | None) -> None:
    sign_in_as(console, "ana")
    data = {"outcome": "full", "abuse": "no"} | ({} if token is None else {"csrf": token})
    answer = console.client.post("/console/cases/r1/verdict", data=data)

    assert answer.status_code == 403
    assert "security token (CSRF)" in answer.text


def test_a_token_of_another_session_is_refused(console: Service) -> None:
    sign_in_as(console, "ben")
    bens = _csrf(console.client.get("/console/cases/r1").text)
    sign_in_as(console, "ana")
    answer = console.client.post("/console/cases/r1/claim", data={"csrf": bens})

    assert answer.status_code == 403


# --- the queue and claims ----------------------------------------------------------------------


def test_the_queue_orders_by_deadline_marks_overdue_and_filters(console: Service) -> None:
    sign_in_as(console, "ana")
    everything = console.client.get("/console/queue").text
    disputes = console.client.get("/console/queue?queue=disputes").text
    memberships = console.client.get("/console/queue?product_type=membership").text
    large = console.client.get("/console/queue?band=large").text
    coded = console.client.get("/console/queue?code=RULE_REPEAT_REFUND").text
    no_code = console.client.get("/console/queue?code=RULE_NONE").text

    assert everything.index(">r2<") < everything.index(">r1<") < everything.index(">r4<")
    assert "overdue" in everything.split(">r2<")[0].rsplit("<tr", 1)[1]
    assert ">r2<" in disputes
    assert ">r1<" not in disputes
    assert "ordinary: 2" in disputes
    assert "disputes: 1" in disputes
    assert ">r1<" in memberships
    assert ">r2<" not in memberships
    assert "No open case matches" in large
    assert ">r1<" in coded
    assert "No open case matches" in no_code


def test_a_claim_holds_until_its_holder_is_idle(console: Service) -> None:
    engine = _engine(console)
    sign_in_as(console, "ana")
    csrf = _csrf(console.client.get("/console/cases/r4").text)
    assert console.client.post("/console/cases/r4/claim", data={"csrf": csrf}).status_code == 200

    sign_in_as(console, "ben")
    page = console.client.get("/console/cases/r4").text
    assert "ana holds this case" in page
    assert "Record the verdict" not in page
    csrf = _csrf(page)
    refused = console.client.post("/console/cases/r4/claim", data={"csrf": csrf})
    assert refused.status_code == 409
    verdict = console.client.post(
        "/console/cases/r4/verdict", data={"csrf": csrf, "outcome": "full", "abuse": "no"}
    )
    assert verdict.status_code == 409

    # Ana idle longer than the idle time: her claim lapses, and Ben may take the case.
    idle = units.micros(datetime.now(UTC) - timedelta(minutes=31))
    with engine.begin() as conn:
        conn.execute(update(accounts).where(accounts.c.name == "ana").values(last_seen_at=idle))
    taken = console.client.post("/console/cases/r4/claim", data={"csrf": csrf})
    assert taken.status_code == 200
    assert "You hold this case" in taken.text
    queue = console.client.get("/console/queue").text
    assert "ben (you)" in queue


# --- escaping --------------------------------------------------------------------------------


def test_a_buyer_id_holding_markup_shows_as_text(console: Service) -> None:
    sign_in_as(console, "ana")
    pages = [
        console.client.get("/console/queue").text,
        console.client.get("/console/cases/r4").text,
        console.client.get("/console/search", params={"q": HOSTILE}).text,
    ]
    for html in pages:
        assert HOSTILE not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# --- service levels on /metrics --------------------------------------------------------------


def test_the_review_service_levels_are_gauges(console: Service) -> None:
    text = console.client.get("/metrics").text

    assert re.search(r'riskmodel_review_waiting\{queue="disputes"\} [1-9]', text)
    assert re.search(r'riskmodel_review_overdue\{queue="disputes"\} [1-9]', text)
    assert "riskmodel_review_oldest_seconds" in text


def test_the_settings_come_from_the_environment() -> None:
    from serving.console.web import ConsoleSettings

    chosen = ConsoleSettings.from_env({"RISKMODEL_CONSOLE_IDLE_MINUTES": "5"})
    assert chosen.idle_us == 5 * units.MINUTE
    assert ConsoleSettings.from_env({}).idle_minutes == 30


# --- the command line ------------------------------------------------------------------------


def test_accounts_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from riskmodel.cli import main

    url = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    created = main(
        [
            "accounts",
            "create",
            "ana",
            "--role",
            "reviewer",
            "--password-stdin",
            "--database-url",
            url,
        ]
    )
    listed = main(["accounts", "list", "--database-url", url])
    disabled = main(["accounts", "disable", "ana", "--database-url", url])
    again = main(["accounts", "disable", "ana", "--database-url", url])
    out, err = capsys.readouterr()

    assert (created, listed, disabled, again) == (0, 0, 0, 1)
    assert "account ana (reviewer) created" in out
    assert "ana" in out
    assert "never" in out
    assert PASSWORD not in out + err
    assert "disabled already" in err
    engine = store.open_store(url)
    try:
        assert sign_in(engine, "ana", PASSWORD) is None
    finally:
        engine.dispose()


# --- the same queries on both stores ----------------------------------------------------------


def test_the_console_s_queries_run_on_both_stores(engine: Engine, database_url: str) -> None:
    from serving.console.cases import read_case
    from serving.console.levels import service_levels
    from serving.console.queue import Filters, claim, queue_page

    engine.dispose()
    seed_cases(database_url)
    create_account(engine, "ana", "reviewer", PASSWORD)
    create_account(engine, "ben", "reviewer", PASSWORD)
    now = units.micros(datetime.now(UTC))
    with engine.begin() as conn:
        conn.execute(update(accounts).values(last_seen_at=now))

    found = queue_page(engine, Filters(), 1, 2, now=now, idle_us=units.HOUR)
    filtered = queue_page(
        engine,
        Filters(product_type="membership", band="small", code="RULE_REPEAT_REFUND"),
        1,
        50,
        now=now,
        idle_us=units.HOUR,
    )
    assert [item.request_id for item in found.items] == ["r2", "r1"]
    assert (found.total, found.pages, found.counts) == (3, 2, {"disputes": 1, "ordinary": 2})
    assert found.items[0].overdue(now)
    assert [item.request_id for item in filtered.items] == ["r1"]
    assert claim(engine, "r1", "ana", now=now, idle_us=units.HOUR) == "ana"
    assert claim(engine, "r1", "ben", now=now, idle_us=units.HOUR) == "ana"
    assert claim(engine, "r1", "ben", now=now + 2 * units.HOUR, idle_us=units.HOUR) == "ben"
    case = read_case(engine, "r1", None, "review")
    assert case is not None
    assert case.days_used_seen == 3
    assert [link["user_id"] for link in case.linked] == [HOSTILE]
    levels = service_levels(engine, now=now)
    assert [(w.queue, w.cases, w.overdue) for w in levels.waiting] == [
        ("disputes", 1, 1),
        ("ordinary", 2, 0),
    ]
