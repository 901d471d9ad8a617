"""What is live, kept in the store so that every worker of every replica follows it: the
live settings (``live_settings``: the policy's SHA-256, the model version, the kill
switch), every policy that was ever live (``policy_archive``) and the trail of changes
(``audit_log``).

A change is one transaction: the setting, the archive entry it needs and its line in the
trail are written together or not at all. Callers validate before they write (the policy
parses against the catalogue, the model loads): the store keeps what it is given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, insert, select, update

from riskmodel.store.schema import audit_log, live_settings, policy_archive
from riskmodel.units import micros

__all__ = [
    "SETTINGS",
    "SWITCH_MODES",
    "ArchivedPolicy",
    "AuditLine",
    "LiveSetting",
    "archive",
    "archived_policy",
    "audit_trail",
    "live_now",
    "note",
    "policy_history",
    "set_live",
]

SETTINGS = ("policy", "model", "switch")
SWITCH_MODES = ("off", "review", "rules")
"""The kill switch: ``off``; ``review``, every new decision a review; ``rules``, decided by
the policy's rules and lists without the model."""


@dataclass(frozen=True)
class LiveSetting:
    value: str
    changed_at: int  # microseconds
    changed_by: str
    reason: str | None


@dataclass(frozen=True)
class ArchivedPolicy:
    """A policy as it was made live: its file's text and its list files' (name -> text)."""

    sha256: str
    version: str
    text: str
    list_files: Mapping[str, str]
    archived_at: int


@dataclass(frozen=True)
class AuditLine:
    at: int
    who: str
    action: str
    value: str | None
    reason: str | None


def live_now(conn: Connection) -> dict[str, LiveSetting]:
    """The live settings (a setting never made live is absent)."""
    rows = conn.execute(select(live_settings)).all()
    return {
        row.what: LiveSetting(row.value, int(row.changed_at), row.changed_by, row.reason)
        for row in rows
    }


def set_live(
    engine: Engine,
    what: str,
    value: str,
    *,
    who: str,
    reason: str | None = None,
    policy: ArchivedPolicy | None = None,
) -> None:
    """Make ``value`` the live ``what``, archiving ``policy`` (its text) when given, and
    note the change in the trail; one transaction."""
    if what not in SETTINGS:
        raise ValueError(f"not a live setting: {what!r} (one of {', '.join(SETTINGS)})")
    if what == "switch" and value not in SWITCH_MODES:
        raise ValueError(f"the switch is one of {', '.join(SWITCH_MODES)}, not {value!r}")
    if what == "policy" and (policy is None or policy.sha256 != value):
        raise ValueError("a live policy is archived with it: pass the policy whose hash it is")
    now = micros(datetime.now(UTC))
    row = {"value": value, "changed_at": now, "changed_by": who, "reason": reason}
    with engine.begin() as conn:
        if policy is not None:
            archive(conn, policy)
        changed = conn.execute(
            update(live_settings).where(live_settings.c.what == what).values(**row)
        ).rowcount
        if changed == 0:
            conn.execute(insert(live_settings).values(what=what, **row))
        note(conn, f"{what} set", value, who=who, reason=reason)


def note(
    conn: Connection, action: str, value: str | None, *, who: str, reason: str | None = None
) -> None:
    """A line of the audit trail, in the caller's transaction."""
    conn.execute(
        insert(audit_log).values(
            at=micros(datetime.now(UTC)), who=who, action=action, value=value, reason=reason
        )
    )


def archive(conn: Connection, policy: ArchivedPolicy) -> None:
    """Keep ``policy`` under its hash, unless it is kept already (in the caller's
    transaction): a decision's ``policy_hash`` then always finds its text."""
    known = conn.execute(
        select(policy_archive.c.sha256).where(policy_archive.c.sha256 == policy.sha256)
    ).first()
    if known is None:
        document = {"text": policy.text, "list_files": dict(policy.list_files)}
        conn.execute(
            insert(policy_archive).values(
                sha256=policy.sha256,
                version=policy.version,
                document=json.dumps(document, sort_keys=True),
                archived_at=micros(datetime.now(UTC)),
            )
        )


def archived_policy(conn: Connection, sha256: str) -> ArchivedPolicy | None:
    """The archived policy with this SHA-256, or None."""
    row = conn.execute(select(policy_archive).where(policy_archive.c.sha256 == sha256)).first()
    if row is None:
        return None
    document = json.loads(row.document)
    return ArchivedPolicy(
        row.sha256,
        row.version,
        str(document["text"]),
        {str(k): str(v) for k, v in document["list_files"].items()},
        int(row.archived_at),
    )


def policy_history(conn: Connection) -> list[ArchivedPolicy]:
    """Every policy ever made live, oldest first."""
    hashes = conn.execute(
        select(policy_archive.c.sha256).order_by(
            policy_archive.c.archived_at, policy_archive.c.sha256
        )
    ).scalars()
    found = [archived_policy(conn, sha) for sha in hashes]
    return [policy for policy in found if policy is not None]


def audit_trail(conn: Connection, limit: int = 100) -> list[AuditLine]:
    """The latest ``limit`` changes, newest first."""
    rows = conn.execute(select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)).all()
    return [AuditLine(int(r.at), r.who, r.action, r.value, r.reason) for r in rows]
