"""Schemathesis against the generated OpenAPI document, every check on: the document is the
truth about what the service accepts and answers.

This is ``st run --checks all`` in process: schemathesis's engine on the application, with
its coverage phase (each documented bound and pattern approached from both sides), fuzzing
with valid and invalid data, and, on SQLite, stateful chains through the links it infers
between operations. Every check runs: no server error; statuses, content types, headers and
bodies as documented; invalid data refused and valid data accepted; authentication not
ignored; unsupported methods answered 405. Bounded (examples per operation and mode) so
that it runs in the ordinary test suite, on both stores: PostgreSQL refuses what SQLite
accepts (NUL characters, over-long texts, out-of-range integers), so it is where an
unbounded field shows as a server error.

Two answers are allowed to valid data, because no JSON Schema can say when they come:

- 413, for a body above the deployment's byte limit or a batch above its ``max_batch``
  (both configurable, both documented as 413 on every route that takes a body);
- 422 for a reason of the store's or the service's state, never of the body's form: rows
  that are well formed but break the dataset contract against the store (an unknown
  user, a key twice in one batch), a model refused on reload. A valid body is never
  refused as ``invalid_request``, the code of validation: ``_valid_data_passes_validation``
  says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema

from riskmodel import store
from serving.app import create_app
from tests.test_serving_fixtures import load_tiny, make_settings

# schemathesis's own lists with 413 and 422 added (see above), and without what this
# service never answers (3xx, 428, 429) or must never answer (5xx: a server error is not a
# refusal).
_VALID_DATA = ["2xx", "401", "403", "404", "409", "413", "422"]
_INVALID_DATA = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422"]


@schemathesis.check
def _valid_data_passes_validation(ctx: Any, response: Any, case: Case) -> bool | None:
    """Data the document calls valid is never refused by the service's own validation."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return None
    if response.status_code == 422 and response.json()["error"]["code"] == "invalid_request":
        raise AssertionError(f"valid data refused by validation: {response.text[:500]}")
    return None


def _config(key: str, phases: set[str], examples: int) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": 20260502,
            # An admin key: every operation is reached past authentication, into its work.
            "headers": {"Authorization": f"Bearer {key}"},
            "generation": {"mode": "all", "max-examples": examples, "database": "none"},
            "checks": {
                "enabled": True,
                "positive_data_acceptance": {"expected-statuses": _VALID_DATA},
                "negative_data_rejection": {"expected-statuses": _INVALID_DATA},
            },
            # The document has no examples, so that phase would have nothing to send.
            "phases": {
                name: {"enabled": name in phases}
                for name in ("examples", "coverage", "fuzzing", "stateful")
            },
        }
    )


def _failures(app: Any, config: SchemathesisConfig) -> tuple[int, list[str]]:
    """The cases sent, and every failure and error of the run, each with how to repeat it."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    sent, found = 0, []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            sent += len(event.recorder.cases)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        found.append(
                            f"{event.label or 'a chain'} [{event.phase.value}] {check.name}: "
                            f"{failure.title}\n"
                            f"{failure.message[:500]}\n{check.failure_info.code_sample[:1000]}"
                        )
        elif isinstance(event, events.NonFatalError | events.FatalError):
            found.append(f"{event.label}: {event.info.format()[:1000]}")
    return sent, sorted(set(found))


# Every phase on SQLite. The coverage phase holds most of the cost (each history body
# near a bound goes through the dataset contract), and its findings are about the document,
# the same on either store; PostgreSQL gets more fuzzing instead, where its own refusals
# (a NUL inside a text, say) would show.
@pytest.mark.parametrize(
    ("backend", "phases", "examples"),
    [
        ("sqlite", {"coverage", "fuzzing", "stateful"}, 5),
        pytest.param("postgres", {"fuzzing"}, 15, marks=pytest.mark.postgres),
    ],
)
def test_the_document_is_the_truth(
    backend: str,
    phases: set[str],
    examples: int,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        engine = store.open_store(url, create=False)
        store.drop_everything(engine)
        engine.dispose()
    load_tiny(url)
    # A long poll of the outcome feed would wait out the client's timeout.
    settings, keys = make_settings(tmp_path, url, challenger=True, feed_wait_seconds=0.2)

    sent, failures = _failures(create_app(settings), _config(keys["admin"], phases, examples))

    assert sent > 100
    assert not failures, "\n\n".join(failures)
