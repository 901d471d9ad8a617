"""The console's routes: sign-in and sign-out, the queue, a case (claim, verdict, appeal),
support's search and a buyer's history, the review service levels.

Pages that read the store are plain ``def`` routes: FastAPI runs them on its worker
threads, so a slow page never holds up the event loop the decision calls share. Every
form posts back here and ends in a redirect (post, redirect, get), so a reload never
sends a verdict twice.
"""

from __future__ import annotations

import secrets
import time
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import Connection, select
from starlette.concurrency import run_in_threadpool

from riskmodel.domain import ProductType, RefundReason
from riskmodel.store.schema import EVENT_TABLES, decisions
from serving import verdicts
from serving.console import session
from serving.console.accounts import LOCK_AFTER, LOCK_MINUTES, sign_in, sign_out
from serving.console.cases import read_case
from serving.console.levels import WINDOW_DAYS, service_levels
from serving.console.queue import BANDS, Filters, claim, holder, is_open, queue_page, release
from serving.console.web import (
    PageError,
    Person,
    Posted,
    console_state,
    engine_of,
    now_us,
    page,
    posting,
    read_form,
    redirect,
    requires,
    set_session,
)
from serving.errors import Conflict, NotFound, ServingError
from serving.records import user_history
from serving.runtime import Runtime
from serving.schemas import AppealIn, VerdictIn

__all__ = [
    "appeal",
    "case_page",
    "decide",
    "history",
    "home",
    "let_go",
    "levels",
    "login",
    "login_form",
    "logout",
    "queue",
    "router",
    "search",
    "style",
    "take",
]

router = APIRouter(prefix="/console", include_in_schema=False)

HISTORY_PAGE = 25
_MAX_PARAM = 128
_MAX_THEN = 2000  # a filtered queue's address

Reviewer = Annotated[Person, Depends(requires("queue"))]
CaseReader = Annotated[Person, Depends(requires("case"))]
Searcher = Annotated[Person, Depends(requires("search"))]
HistoryReader = Annotated[Person, Depends(requires("history"))]
LevelsReader = Annotated[Person, Depends(requires("levels"))]
Claiming = Annotated[Posted, Depends(posting("claim"))]
Deciding = Annotated[Posted, Depends(posting("decide"))]
Appealing = Annotated[Posted, Depends(posting("appeal"))]
SigningOut = Annotated[Posted, Depends(posting("search"))]  # every role may sign out

_STYLE = files("serving").joinpath("templates/console/console.css").read_bytes()


def _param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    if len(value) > _MAX_PARAM or "\x00" in value:
        raise PageError(400, "Bad address", f"The {name} in the address is not one we use.")
    return value or None


def _page_number(request: Request) -> int:
    text = request.query_params.get("page", "1")
    if not text.isdigit() or not 1 <= int(text) <= 100_000:
        raise PageError(400, "Bad address", "The page number in the address is not a number.")
    return int(text)


def _safe_then(then: str | None, role: str) -> str:
    """Where to go after signing in: a console page, never another site."""
    if then and then.startswith("/console") and not then.startswith("//") and "\\" not in then:
        return then
    return "/console/queue" if role == "reviewer" else "/console/search"


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _checked_id(request_id: str) -> str:
    if not request_id or len(request_id) > _MAX_PARAM or "\x00" in request_id:
        raise PageError(404, "No such case", "There is no case with this id.")
    return request_id


# --- style, sign-in, sign-out ---------------------------------------------------------------


@router.get("/console.css")
async def style() -> Response:
    response = Response(_STYLE, media_type="text/css")
    response.headers["Cache-Control"] = "max-age=3600"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _login_page(
    request: Request, then: str | None, problem: str | None, status: int = 200
) -> HTMLResponse:
    secret = console_state(request.app).secret(engine_of(request))
    nonce = secrets.token_hex(16)
    response = page(
        None,
        "login.html",
        status=status,
        csrf=session.login_token(secret, nonce),
        then=then or "",
        problem=problem,
    )
    response.set_cookie(
        session.LOGIN_COOKIE,
        nonce,
        max_age=3600,
        path="/console",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/login")
def login_form(request: Request) -> HTMLResponse:
    then = request.query_params.get("then", "")
    return _login_page(request, then if len(then) <= _MAX_THEN else None, None)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await read_form(request)
    engine = engine_of(request)
    state = console_state(request.app)
    secret = state.secret(engine)
    nonce = request.cookies.get(session.LOGIN_COOKIE, "")
    then = form.get("then") or None
    if not nonce or not session.check_login(secret, nonce, form.get("csrf")):
        raise PageError(
            403,
            "Form refused",
            "The sign-in form was refused: it did not carry its security token (CSRF). "
            "Open the sign-in page again.",
        )
    # scrypt takes tens of milliseconds of CPU: off the event loop.
    account = await run_in_threadpool(
        sign_in, engine, form.get("name", "").strip(), form.get("password", "")
    )
    if account is None:
        wrong = (
            f"The name or the password is wrong. After {LOCK_AFTER} wrong passwords in a row "
            f"an account waits {LOCK_MINUTES} minutes before it signs in again."
        )
        return _login_page(request, then, wrong, status=401)
    now = int(time.time())
    hours = state.settings.session_hours
    response = redirect(_safe_then(then, account.role))
    set_session(
        response,
        session.issue(secret, account.name, now=now, hours=hours),
        request.url.scheme == "https",
        int(hours * 3600),
    )
    response.delete_cookie(session.LOGIN_COOKIE, path="/console")
    return response


@router.post("/logout")
def logout(request: Request, posted: SigningOut) -> Response:
    # Every session of the account ends, a copied cookie's too, not only this browser's.
    sign_out(engine_of(request), posted.person.account.name)
    response = redirect("/console/login")
    response.delete_cookie(session.COOKIE, path="/console")
    return response


@router.get("")
def home(person: CaseReader) -> Response:
    return redirect(_safe_then(None, person.role), person)


# --- the queue ------------------------------------------------------------------------------


@router.get("/queue")
def queue(request: Request, person: Reviewer) -> HTMLResponse:
    filters = Filters(
        queue=_param(request, "queue"),
        product_type=_param(request, "product_type"),
        band=_param(request, "band"),
        reason=_param(request, "reason"),
        code=_param(request, "code"),
    )
    number = _page_number(request)
    state = console_state(request.app)
    found = queue_page(
        engine_of(request),
        filters,
        number,
        state.settings.page_size,
        now=now_us(),
        idle_us=state.settings.idle_us,
    )
    return page(
        person,
        "queue.html",
        filters=filters,
        found=found,
        bands=BANDS,
        product_types=[p.value for p in ProductType],
        reasons=[r.value for r in RefundReason],
        link=lambda **more: "/console/queue?" + urlencode(filters.query(**more)),
    )


# --- a case ---------------------------------------------------------------------------------


def _case_page(
    request: Request,
    person: Person,
    request_id: str,
    *,
    problem: str | None = None,
    status: int = 200,
    form: dict[str, str] | None = None,
) -> HTMLResponse:
    engine = engine_of(request)
    runtime = _runtime(request)
    state = console_state(request.app)
    now = now_us()
    with engine.begin() as conn:
        waiting = is_open(conn, request_id)
        held_by = holder(conn, request_id, now=now, idle_us=state.settings.idle_us)
    case = read_case(engine, request_id, runtime.policy, waiting)
    if case is None:
        raise PageError(404, "No such case", "There is no refund request or decision with this id.")
    history = None
    if case.request is not None:
        try:
            history = user_history(runtime, str(case.request["user_id"]), 5, 0)
        except NotFound:
            history = None
    last = case.versions[-1] if case.versions else None
    appealable = (
        case.appeal is None and last is not None and last["decision"] in ("block", "refuse")
    )
    return page(
        person,
        "case.html",
        status=status,
        case=case,
        held_by=held_by,
        history=history,
        appealable=appealable,
        problem=problem,
        form=form or {},
        done=_param(request, "done"),
    )


@router.get("/cases/{request_id}")
def case_page(request: Request, request_id: str, person: CaseReader) -> HTMLResponse:
    return _case_page(request, person, _checked_id(request_id))


@router.post("/cases/{request_id}/claim")
def take(request: Request, request_id: str, posted: Claiming) -> Response:
    request_id = _checked_id(request_id)
    engine = engine_of(request)
    state = console_state(request.app)
    with engine.begin() as conn:
        waiting = is_open(conn, request_id)
    if waiting is None:
        return _case_page(
            request,
            posted.person,
            request_id,
            status=409,
            problem="This case is not awaiting a decision: there is nothing to claim.",
        )
    got = claim(
        engine, request_id, posted.person.name, now=now_us(), idle_us=state.settings.idle_us
    )
    if got != posted.person.name:
        return _case_page(
            request,
            posted.person,
            request_id,
            status=409,
            problem=f"{got} holds this case; it is free again once they are idle "
            f"{state.settings.idle_minutes:g} minutes.",
        )
    return redirect(f"/console/cases/{_quoted(request_id)}?done=claimed", posted.person)


@router.post("/cases/{request_id}/release")
def let_go(request: Request, request_id: str, posted: Claiming) -> Response:
    request_id = _checked_id(request_id)
    release(engine_of(request), request_id, posted.person.name)
    return redirect(f"/console/cases/{_quoted(request_id)}?done=released", posted.person)


def _verdict(form: dict[str, str]) -> VerdictIn:
    outcome = form.get("outcome", "")
    abuse = form.get("abuse", "")
    if outcome not in ("full", "amount", "refuse"):
        raise ValueError("Choose an outcome: approve in full, approve an amount, or refuse.")
    if abuse not in ("yes", "no"):
        raise ValueError("Say whether this is abuse: yes or no.")
    amount = form.get("amount", "").strip() or None
    if outcome == "amount" and amount is None:
        raise ValueError("Give the amount to approve.")
    note = form.get("note", "").strip() or None
    try:
        return VerdictIn.model_validate(
            {
                "decision": "refuse" if outcome == "refuse" else "approve",
                "approved_amount": amount if outcome == "amount" else None,
                "is_abuse": abuse == "yes",
                "note": note,
            }
        )
    except ValidationError as exc:
        where = {"approved_amount": "The amount", "note": "The note"}
        problems = [
            f"{where.get(str(e['loc'][0]), str(e['loc'][0]))}: {e['msg']}" for e in exc.errors()
        ]
        raise ValueError("; ".join(problems)) from exc


@router.post("/cases/{request_id}/verdict")
def decide(request: Request, request_id: str, posted: Deciding) -> Response:
    request_id = _checked_id(request_id)
    person, form = posted.person, posted.form
    state = console_state(request.app)
    try:
        verdict = _verdict(form)
    except ValueError as exc:
        return _case_page(request, person, request_id, status=422, problem=str(exc), form=form)

    def unclaimed(conn: Connection) -> None:
        # In the verdict's transaction: a claim taken a moment ago still counts.
        held_by = holder(conn, request_id, now=now_us(), idle_us=state.settings.idle_us)
        if held_by is not None and held_by != person.name:
            raise Conflict(
                f"{held_by} holds this case: only they can decide it while they work on it."
            )

    try:
        verdicts.decide_case(_runtime(request), request_id, verdict, person.name, guard=unclaimed)
    except ServingError as exc:
        return _case_page(
            request, person, request_id, status=exc.status, problem=exc.message, form=form
        )
    return redirect(f"/console/cases/{_quoted(request_id)}?done=decided", person)


@router.post("/cases/{request_id}/appeal")
def appeal(request: Request, request_id: str, posted: Appealing) -> Response:
    request_id = _checked_id(request_id)
    person, form = posted.person, posted.form
    statement = form.get("statement", "").strip()
    try:
        checked = AppealIn.model_validate(
            {"request_id": request_id, "statement": statement, "channel": "support"}
        )
    except ValidationError:
        return _case_page(
            request,
            person,
            request_id,
            status=422,
            form=form,
            problem="Write the buyer's statement (1 to 2,000 characters).",
        )
    try:
        verdicts.file_appeal(
            _runtime(request), request_id, checked.statement, checked.channel, person.name
        )
    except ServingError as exc:
        return _case_page(
            request, person, request_id, status=exc.status, problem=exc.message, form=form
        )
    return redirect(f"/console/cases/{_quoted(request_id)}?done=appealed", person)


def _quoted(request_id: str) -> str:
    return quote(request_id, safe="")


# --- search and histories -------------------------------------------------------------------


@router.get("/search")
def search(request: Request, person: Searcher) -> HTMLResponse:
    q = _param(request, "q")
    hits: dict[str, list[dict[str, Any]]] = {"users": [], "orders": [], "requests": []}
    if q is not None:
        users = EVENT_TABLES["users"]
        orders = EVENT_TABLES["orders"]
        requests = EVENT_TABLES["refund_requests"]
        with engine_of(request).begin() as conn:
            known = conn.execute(
                select(users.c.user_id)
                .where(users.c.user_id == q)
                .union(select(orders.c.user_id).where(orders.c.user_id == q))
            ).scalars()
            hits["users"] = [{"user_id": u} for u in known]
            hits["orders"] = [
                dict(r._mapping)
                for r in conn.execute(
                    select(
                        orders.c.order_id,
                        orders.c.user_id,
                        orders.c.product_type,
                        orders.c.amount,
                        orders.c.paid_at,
                    ).where(orders.c.order_id == q)
                )
            ]
            by_request = select(
                requests.c.request_id,
                requests.c.user_id,
                requests.c.order_id,
                requests.c.amount,
                requests.c.reason,
                requests.c.requested_at,
            )
            found = conn.execute(
                by_request.where((requests.c.request_id == q) | (requests.c.order_id == q)).limit(
                    50
                )
            ).all()
            hits["requests"] = [dict(r._mapping) for r in found]
            if not found:
                only = conn.execute(
                    select(decisions.c.request_id).where(decisions.c.request_id == q)
                ).scalar_one_or_none()
                if only is not None:
                    hits["requests"] = [
                        {
                            "request_id": only,
                            "user_id": None,
                            "order_id": None,
                            "amount": None,
                            "reason": None,
                            "requested_at": None,
                        }
                    ]
    return page(person, "search.html", q=q or "", hits=hits)


@router.get("/users/{user_id}")
def history(request: Request, user_id: str, person: HistoryReader) -> HTMLResponse:
    user_id = _checked_id(user_id)
    number = _page_number(request)
    try:
        found = user_history(_runtime(request), user_id, HISTORY_PAGE, (number - 1) * HISTORY_PAGE)
    except NotFound as exc:
        raise PageError(404, "No such buyer", "No history for this user id.") from exc
    largest = max(found["totals"].values(), default=0)
    pages = max((largest + HISTORY_PAGE - 1) // HISTORY_PAGE, 1)
    return page(person, "history.html", user_id=user_id, history=found, number=number, pages=pages)


# --- service levels -------------------------------------------------------------------------


@router.get("/service-levels")
def levels(request: Request, person: LevelsReader) -> HTMLResponse:
    found = service_levels(engine_of(request), now=now_us())
    return page(person, "levels.html", levels=found, window_days=WINDOW_DAYS)
