"""Schemathesis against the generated OpenAPI document: no input makes a server error.

Bounded (``max_examples`` per operation) so that it runs in the ordinary test suite, on
both stores: PostgreSQL refuses what SQLite accepts (NUL characters, over-long texts,
out-of-range integers), so it is where an unbounded field shows as a 500.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case

from riskmodel import store
from serving.app import create_app
from tests.test_serving_fixtures import load_tiny, make_settings

_EXAMPLES = 30
# A reload reads the model bundle again (a fraction of a second): a few are enough.
_FEW = {"/v1/admin/reload": 2}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, dict[str, str]]]:
    tmp: Path = tmp_path_factory.mktemp(f"schemathesis-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'store.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        engine = store.open_store(url, create=False)
        store.drop_everything(engine)
        engine.dispose()
    load_tiny(url)
    config, keys = make_settings(tmp, url, challenger=True)
    return create_app(config), keys


def test_no_input_makes_a_server_error(api: tuple[Any, dict[str, str]]) -> None:
    app, keys = api
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in loaded.get_all_operations()]
    assert len(operations) >= 12
    # An admin key: every operation is reached past authentication, into its real work.
    headers = {"Authorization": f"Bearer {keys['admin']}"}
    # One hypothesis run per operation, driven here rather than by the schemathesis pytest
    # plugin (its fixture loader reads a pytest internal that pytest 9 no longer has).
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=_FEW.get(operation.path, _EXAMPLES),
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def call(case: Case) -> None:
            response = case.call(headers=headers)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} -> {response.status_code}: "
                f"{response.text[:500]}"
            )

        call()
