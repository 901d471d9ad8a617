"""``GET /rules`` and ``GET /rules.json``: the refund rules the marketplace publishes.

Open, like the operations routes: buyers read them. Only what the live policy marks for
buyers is shown: its ``public`` title and introduction, and each enabled rule that has a
``public`` text. Thresholds, lists, queues, conditions, reviewers' messages and rules
without a public text never leave the service.
"""

from __future__ import annotations

from datetime import datetime

import jinja2
from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from riskmodel import units
from riskmodel.domain import Decision
from serving.deps import CurrentRuntime
from serving.errors import Unavailable, documented_errors
from serving.runtime import Runtime

__all__ = ["PublishedRule", "PublishedRules", "published", "router", "rules_json", "rules_page"]

router = APIRouter(tags=["published rules"])

DEFAULT_TITLE = "Refund rules"

_UNAVAILABLE = "the refund rules are unavailable: no policy is loaded"

# Autoescaping on: every text on the page comes from a policy file, never markup.
_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("serving", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)

# The page loads nothing and runs nothing: only its own inline style is allowed.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

_OUTCOME = {
    Decision.APPROVE: "Approved",
    Decision.REVIEW: "Checked by a person",
    Decision.BLOCK: "Refused",
}


class PublishedRule(BaseModel):
    code: str
    action: Decision
    text: str


class PublishedRules(BaseModel):
    title: str
    introduction: str | None
    policy_version: str
    last_changed: datetime | None  # when this policy was put live, if it was deployed
    rules: list[PublishedRule]


def published(runtime: Runtime) -> PublishedRules | None:
    """What the live policy publishes; None when no policy is loaded."""
    policy = runtime.policy
    if policy is None:
        return None
    public = policy.spec.public
    setting = runtime.live.get("policy")
    # A worker started from its file has no deploy behind it, so no time to show.
    changed = setting.changed_at if setting and setting.value == policy.sha256 else None
    return PublishedRules(
        title=DEFAULT_TITLE if public is None else public.title,
        introduction=None if public is None else public.introduction,
        policy_version=policy.version,
        last_changed=None if changed is None else units.moment(changed),
        rules=[
            PublishedRule(code=rule.code, action=rule.action, text=rule.public)
            for rule in policy.spec.rules
            if rule.enabled and rule.public is not None
        ],
    )


@router.get(
    "/rules",
    response_class=HTMLResponse,
    responses={503: {"description": "no policy is loaded", "content": {"text/html": {}}}},
)
async def rules_page(runtime: CurrentRuntime) -> HTMLResponse:
    """The published refund rules, as a page for buyers (open)."""
    content = published(runtime)
    if content is None:
        page = _templates.get_template("rules_unavailable.html").render()
        return HTMLResponse(page, status_code=503, headers=_PAGE_HEADERS)
    page = _templates.get_template("rules.html").render(rules=content, outcome=_OUTCOME)
    return HTMLResponse(page, headers=_PAGE_HEADERS)


@router.get(
    "/rules.json",
    responses=documented_errors(503, meanings={503: "no policy is loaded (unavailable)"}),
)
async def rules_json(runtime: CurrentRuntime) -> PublishedRules:
    """The published refund rules, as on ``/rules`` (open)."""
    content = published(runtime)
    if content is None:
        raise Unavailable(_UNAVAILABLE)
    return content
