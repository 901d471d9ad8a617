"""What every console page shares: its settings, the signed-in person and what their role
allows, posted forms and their CSRF check, rendering with the security headers, and the
pages that refuse (403, 404, 409, 503) or send to the sign-in page.

Every value reaches the page through Jinja2 with autoescaping on: a user id holding
``<script>`` shows as text. The pages run no script at all, and the Content-Security-Policy
says so: nothing but the console's own style sheet may load, forms post only here, and no
other site may frame them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote

import jinja2
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Engine

from riskmodel import units
from serving.console import session
from serving.console.accounts import Account, touch
from serving.runtime import Runtime

__all__ = [
    "ALLOWED",
    "HEADERS",
    "ConsoleSettings",
    "ConsoleState",
    "Form",
    "PageError",
    "Person",
    "Posted",
    "SignInNeeded",
    "SignedIn",
    "console_state",
    "engine_of",
    "install_handlers",
    "now_us",
    "page",
    "posting",
    "read_form",
    "redirect",
    "requires",
    "security_headers",
    "set_session",
    "signed_in",
]

ALLOWED: Mapping[str, frozenset[str]] = {
    "queue": frozenset({"reviewer"}),
    "claim": frozenset({"reviewer"}),
    "decide": frozenset({"reviewer"}),
    "case": frozenset({"reviewer", "support"}),
    "search": frozenset({"reviewer", "support"}),
    "history": frozenset({"reviewer", "support"}),
    "levels": frozenset({"reviewer", "support"}),
    "appeal": frozenset({"support"}),
}
"""What each role may do: a reviewer works the queue and decides; support staff find a
buyer's cases and file appeals for them, and never decide."""

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    # Pages hold buyers' data: not kept by the browser or a shared cache.
    "Cache-Control": "no-store",
}

_MAX_FORM_BYTES = 64 * 1024
_MAX_FIELDS = 40


@dataclass(frozen=True)
class ConsoleSettings:
    """``idle_minutes``: a claim lapses when its holder has loaded no page for this long
    (``RISKMODEL_CONSOLE_IDLE_MINUTES``, 30). ``session_hours``: a session ends after this
    long without a page (``RISKMODEL_CONSOLE_SESSION_HOURS``, 12). ``page_size``: cases a
    queue page shows."""

    idle_minutes: float = 30.0
    session_hours: float = 12.0
    page_size: int = 50

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ConsoleSettings:
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            idle_minutes=float(env.get("RISKMODEL_CONSOLE_IDLE_MINUTES") or defaults.idle_minutes),
            session_hours=float(
                env.get("RISKMODEL_CONSOLE_SESSION_HOURS") or defaults.session_hours
            ),
        )

    @property
    def idle_us(self) -> int:
        return int(self.idle_minutes * units.MINUTE)


@dataclass
class ConsoleState:
    """The console's part of an application: its settings and the signing secret, read
    from the store once per worker."""

    settings: ConsoleSettings = field(default_factory=ConsoleSettings.from_env)
    _secret: bytes | None = None

    def secret(self, engine: Engine) -> bytes:
        if self._secret is None:
            self._secret = session.shared_secret(engine)
        return self._secret


def console_state(app: Any) -> ConsoleState:
    state: ConsoleState = app.state.console
    return state


class PageError(Exception):
    """A console page that refuses, with a status and a sentence for the person."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


class SignInNeeded(Exception):
    def __init__(self, then: str) -> None:
        super().__init__(then)
        self.then = then


@dataclass(frozen=True)
class Person:
    """Who is signed in, as the store says now, with the session that brought them."""

    account: Account
    session: session.Session
    csrf: str
    cookie: str  # the session cookie issued again, with a new expiry
    max_age: int  # seconds
    secure: bool

    @property
    def name(self) -> str:
        return self.account.name

    @property
    def role(self) -> str:
        return self.account.role

    def may(self, action: str) -> bool:
        return self.role in ALLOWED[action]


def engine_of(request: Request) -> Engine:
    runtime: Runtime = request.app.state.runtime
    engine = runtime.store.available()
    if engine is None:
        raise PageError(503, "Store unavailable", "The store cannot be reached; try again soon.")
    return engine


def _then(request: Request) -> str:
    """Where to come back after signing in: this page, or the console's first page when
    this was a form (its address takes a POST, not the browser's GET)."""
    if request.method != "GET":
        return "/console"
    path = request.url.path
    return path + (f"?{request.url.query}" if request.url.query else "")


def signed_in(request: Request) -> Person:
    """The signed-in person (``SignInNeeded`` without a valid session). Plain ``def``:
    FastAPI runs it on a worker thread, as it reads the store."""
    engine = engine_of(request)
    state = console_state(request.app)
    secret = state.secret(engine)
    now = int(time.time())
    found = session.open_cookie(secret, request.cookies.get(session.COOKIE), now=now)
    if found is None:
        raise SignInNeeded(_then(request))
    account = touch(engine, found.name)
    if account is None or not account.admits(found.began):
        raise SignInNeeded(_then(request))
    hours = state.settings.session_hours
    return Person(
        account=account,
        session=found,
        csrf=session.csrf_token(secret, found),
        cookie=session.issue(
            secret,
            found.name,
            now=now,
            hours=hours,
            session_id=found.session_id,
            began=found.began,
        ),
        max_age=int(hours * 3600),
        secure=request.url.scheme == "https",
    )


SignedIn = Annotated[Person, Depends(signed_in)]


def requires(action: str) -> Callable[[Person], Person]:
    """A dependency giving the signed-in person if their role allows ``action`` (403)."""

    def allowed(person: SignedIn) -> Person:
        if not person.may(action):
            raise PageError(
                403,
                "Not allowed",
                f"Your role ({person.role}) does not allow this: it is for "
                f"{' and '.join(sorted(ALLOWED[action]))} accounts.",
            )
        return person

    return allowed


Form = dict[str, str]


async def read_form(request: Request) -> Form:
    """The posted form's fields (the first value of each), read without a multipart
    library: the console's forms are all ``application/x-www-form-urlencoded``."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise PageError(400, "Not a form", "This address takes a form posted from the console.")
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        raise PageError(413, "Form too large", "The form holds more than the console accepts.")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=_MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise PageError(400, "Unreadable form", "The form could not be read.") from exc
    form: Form = {}
    for name, value in pairs:
        if "\x00" in value:
            raise PageError(400, "Unreadable form", "The form holds a NUL character.")
        form.setdefault(name, value)
    return form


@dataclass(frozen=True)
class Posted:
    person: Person
    form: Form


def posting(action: str) -> Callable[..., Awaitable[Posted]]:
    """A dependency for a form's POST: a signed-in person allowed ``action``, whose form
    carries this session's CSRF token (403 and a page saying so otherwise)."""
    role_check = requires(action)

    async def checked(
        request: Request,
        form: Annotated[Form, Depends(read_form)],
        person: SignedIn,
    ) -> Posted:
        secret = console_state(request.app).secret(engine_of(request))
        if not session.check_csrf(secret, person.session, form.get("csrf")):
            raise PageError(
                403,
                "Form refused",
                "The form was refused: it did not carry this session's security token "
                "(CSRF). Reload the page and send it again.",
            )
        return Posted(role_check(person), form)

    return checked


def security_headers(response: Response) -> Response:
    response.headers.update(HEADERS)
    return response


def _when(at: int | None) -> str:
    return "" if at is None else units.moment(at).strftime("%Y-%m-%d %H:%M UTC")


def _money(cents: int | None) -> str:
    return "" if cents is None else units.money(cents)


def _span(us: int) -> str:
    """A duration in words a reviewer reads at a glance: ``2 d 3 h``, ``5 h 20 min``."""
    minutes = abs(us) // units.MINUTE
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("serving", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.filters.update(when=_when, money=_money, span=_span, q=lambda s: quote(str(s), safe=""))


def now_us() -> int:
    return units.micros(datetime.now(UTC))


def page(
    person: Person | None, template: str, *, status: int = 200, **context: Any
) -> HTMLResponse:
    """``console/<template>`` rendered for ``person``, with the security headers and the
    session cookie issued again (it slides)."""
    html = _templates.get_template(f"console/{template}").render(
        person=person, now=now_us(), **context
    )
    response = HTMLResponse(html, status_code=status)
    security_headers(response)
    if person is not None:
        set_session(response, person.cookie, person.secure, person.max_age)
    return response


def set_session(response: Response, value: str, secure: bool, max_age: int) -> None:
    response.set_cookie(
        session.COOKIE,
        value,
        max_age=max_age,
        path="/console",
        httponly=True,
        samesite="lax",
        secure=secure,
    )


def redirect(to: str, person: Person | None = None) -> RedirectResponse:
    """A 303 to ``to`` (after a POST, the browser GETs it)."""
    response = RedirectResponse(to, status_code=303)
    security_headers(response)
    if person is not None:
        set_session(response, person.cookie, person.secure, person.max_age)
    return response


def install_handlers(app: FastAPI) -> None:
    """The refusing pages and the way to the sign-in page, as HTML."""

    async def refused(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        return page(None, "refused.html", status=exc.status, title=exc.title, message=exc.message)

    async def to_sign_in(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInNeeded)
        return redirect(f"/console/login?then={quote(exc.then, safe='')}")

    app.add_exception_handler(PageError, refused)
    app.add_exception_handler(SignInNeeded, to_sign_in)
