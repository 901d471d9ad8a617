"""``riskmodel accounts``: the people who sign in to the review console.

    riskmodel accounts create ana --role reviewer        # asks for the password twice
    echo "$PASSWORD" | riskmodel accounts create sam --role support --password-stdin
    riskmodel accounts list
    riskmodel accounts disable ana

The password is stored as a scrypt hash (``serving.console.accounts``); it is never
printed or stored as typed. A disabled account is kept, for the names on its verdicts,
and cannot sign in; its open sessions end at their next page.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from riskmodel.cli import add_database_option

__all__ = ["register"]


def register(commands: Any) -> None:
    """Add ``accounts`` to the ``riskmodel`` parser."""
    accounts = commands.add_parser(
        "accounts",
        help="accounts of the review console (reviewers, support staff)",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    actions = accounts.add_subparsers(dest="accounts_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create an account; asks for its password")
    create.add_argument("name", help="the name it signs in with")
    create.add_argument("--role", required=True, choices=["reviewer", "support"])
    create.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input (for scripts)",
    )
    add_database_option(create)
    create.set_defaults(handler=_create)
    listing = actions.add_parser("list", help="every account, its role and when last seen")
    add_database_option(listing)
    listing.set_defaults(handler=_list)
    disable = actions.add_parser("disable", help="stop an account signing in")
    disable.add_argument("name")
    add_database_option(disable)
    disable.set_defaults(handler=_disable)


def _password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("the same again: ") != first:
        print("error: the two passwords differ; nothing was created", file=sys.stderr)
        return None
    return first


def _create(args: argparse.Namespace) -> int:
    from riskmodel.store import open_store
    from serving.console.accounts import create_account

    password = _password(args)
    if password is None:
        return 1
    engine = open_store(args.database_url)
    try:
        account = create_account(engine, args.name, args.role, password)
    finally:
        engine.dispose()
    print(f"account {account.name} ({account.role}) created; it signs in at /console/login")
    return 0


def _list(args: argparse.Namespace) -> int:
    from riskmodel.store import open_store
    from riskmodel.units import iso
    from serving.console.accounts import list_accounts

    engine = open_store(args.database_url)
    try:
        found = list_accounts(engine)
    finally:
        engine.dispose()
    if not found:
        print("no accounts; riskmodel accounts create NAME --role reviewer")
        return 0
    for account in found:
        seen = "never" if account.last_seen_at is None else iso(account.last_seen_at)
        state = "active" if account.active else f"disabled {iso(account.disabled_at or 0)}"
        print(f"{account.name:<24} {account.role:<9} last seen {seen:<26} {state}")
    return 0


def _disable(args: argparse.Namespace) -> int:
    from riskmodel.store import open_store
    from serving.console.accounts import disable_account

    engine = open_store(args.database_url)
    try:
        disable_account(engine, args.name)
    finally:
        engine.dispose()
    print(f"account {args.name} disabled")
    return 0
