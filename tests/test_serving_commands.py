"""``riskmodel keys``, ``riskmodel serve`` and ``riskmodel quickstart`` on a tiny marketplace."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from starlette.exceptions import StarletteDeprecationWarning

from riskmodel.cli import build_parser, main
from riskmodel.policy import STARTER_POLICY
from riskmodel.registry import Registry
from riskmodel.store import open_store, read_table, table_counts
from serving import quickstart
from serving.app import create_app
from serving.auth import KeyRing, Role
from serving.commands import default_workers
from serving.settings import Settings

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 package for its test client; httpx works the same.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

_SERVING_ENV = ("RISKMODEL_DATABASE_URL", "RISKMODEL_REGISTRY", "RISKMODEL_POLICY",
                "RISKMODEL_API_KEYS", "OMP_NUM_THREADS")  # fmt: skip


@dataclass(frozen=True)
class Quickstarted:
    root: Path
    output: str
    key: str
    request: dict[str, Any]

    @property
    def sim(self) -> Path:
        return self.root / "sim"

    @property
    def url(self) -> str:
        return f"sqlite:///{self.root / 'store.db'}"

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def policy(self) -> Path:
        return self.root / "policy.yaml"

    @property
    def api_keys(self) -> Path:
        return self.root / "api_keys.json"

    def options(self) -> list[str]:
        return ["--database-url", self.url, "--registry", str(self.registry),
                "--policy", str(self.policy), "--api-keys", str(self.api_keys)]  # fmt: skip

    def settings(self) -> Settings:
        return Settings(database_url=self.url, registry=self.registry, policy=self.policy,
                        api_keys=self.api_keys)  # fmt: skip


def _printed_call(output: str) -> tuple[str, dict[str, Any]]:
    """The key and the body of the curl call quickstart printed."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("curl -s"))
    key_line, body_line = lines[start + 1], lines[start + 3]
    key = key_line.split("Bearer ", 1)[1].split("'", 1)[0]
    body = json.loads(body_line.strip().removeprefix("-d ").strip("'"))
    return key, body


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Quickstarted]:
    root = tmp_path_factory.mktemp("quickstart")
    with pytest.MonkeyPatch.context() as patch:
        for name in _SERVING_ENV:
            patch.delenv(name, raising=False)
        capture = _Capture()
        with capture:
            assert main(_quickstart_argv(root)) == 0
        key, request = _printed_call(capture.text)
        yield Quickstarted(root, capture.text, key, request)


def _quickstart_argv(root: Path) -> list[str]:
    return ["quickstart", "--no-serve", "--users", "3000", "--days", "120", "--seed", "5",
            "--sim", str(root / "sim"), "--database-url", f"sqlite:///{root / 'store.db'}",
            "--registry", str(root / "registry"), "--policy", str(root / "policy.yaml"),
            "--api-keys", str(root / "api_keys.json")]  # fmt: skip


class _Capture:
    """stdout of a module-scoped run (capsys is function-scoped)."""

    def __enter__(self) -> None:
        import contextlib
        import io

        self._buffer = io.StringIO()
        self._redirect = contextlib.redirect_stdout(self._buffer)
        self._redirect.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._redirect.__exit__(None, None, None)
        self.text = self._buffer.getvalue()


@pytest.fixture(autouse=True)
def _no_serving_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # serve exports its choices to the environment for its workers; keep tests apart.
    for name in _SERVING_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def no_uvicorn(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record uvicorn.run's arguments instead of serving."""
    import uvicorn

    calls: list[dict[str, Any]] = []

    def record(app: str, **options: Any) -> None:
        calls.append({"app": app, **options})

    monkeypatch.setattr(uvicorn, "run", record)
    return calls


# -- quickstart ----------------------------------------------------------------------------------


def test_quickstart_builds_store_champion_policy_and_key(started: Quickstarted) -> None:
    engine = open_store(started.url)
    try:
        counts = table_counts(engine)
    finally:
        engine.dispose()
    assert counts["refund_requests"] == len(
        pd.read_parquet(started.sim / "refund_requests.parquet")
    )
    assert counts["orders"] > 0
    assert "champion" in Registry(started.registry).aliases()
    assert started.policy.read_bytes() == STARTER_POLICY.read_bytes()
    caller = KeyRing(started.api_keys).authenticate(started.key)
    assert caller is not None
    assert caller.name == "quickstart"
    assert Role.DECIDE in caller.roles
    for step in ("1. simulate", "2. load", "3. train", "4. install", "5. create an API key",
                 "6. create a reviewer account"):  # fmt: skip
        assert step in started.output
    assert "riskmodel serve" in started.output


def test_quickstart_ends_with_the_console_and_an_account_that_signs_in(
    started: Quickstarted,
) -> None:
    from serving.console.accounts import sign_in

    last = started.output.strip().splitlines()[-1]
    found = re.search(r"(http://\S+/console) \(sign in as '([^']+)', password '([^']+)'", last)
    assert found is not None, last
    engine = open_store(started.url)
    try:
        account = sign_in(engine, found.group(2), found.group(3))
    finally:
        engine.dispose()
    assert account is not None
    assert account.role == "reviewer"


def test_quickstart_request_is_new_and_consistent_with_the_simulation(
    started: Quickstarted,
) -> None:
    request = started.request
    orders = pd.read_parquet(started.sim / "orders.parquet").set_index("order_id")
    asked = pd.read_parquet(started.sim / "refund_requests.parquet")
    order = orders.loc[request["order_id"]]
    assert request["order_id"] not in set(asked["order_id"])
    assert request["request_id"] not in set(asked["request_id"])
    assert request["user_id"] == order["user_id"]
    assert pd.Timestamp(request["requested_at"]) > asked["requested_at"].max()
    assert pd.Timestamp(request["requested_at"]) > order["paid_at"]
    assert 0 < Decimal(request["amount"]) <= Decimal(str(order["amount"]))


def test_quickstart_request_from_a_csv_simulation(tmp_path: Path) -> None:
    sim = tmp_path / "sim"
    argv = ["simulate", "--out", str(sim), "--users", "400", "--days", "60", "--format", "csv"]
    assert main(argv) == 0
    request = quickstart.pending_request(sim, f"sqlite:///{tmp_path / 'empty.db'}")
    orders = pd.read_csv(sim / "orders.csv", dtype=str).set_index("order_id")
    assert request["user_id"] == orders.loc[request["order_id"], "user_id"]
    assert Decimal(request["amount"]) == Decimal(orders.loc[request["order_id"], "amount"])


def test_the_printed_call_gets_a_decision_and_the_same_one_again(started: Quickstarted) -> None:
    with TestClient(create_app(started.settings())) as client:
        headers = {"Authorization": f"Bearer {started.key}"}
        first = client.post("/v1/decisions", json=started.request, headers=headers)
        again = client.post("/v1/decisions", json=started.request, headers=headers)
        anonymous = client.post("/v1/decisions", json=started.request)
    assert first.status_code == 200, first.text
    assert first.json()["decision"] in {"approve", "review", "block"}
    assert first.json()["request_id"] == started.request["request_id"]
    assert again.json()["decided_at"] == first.json()["decided_at"]
    assert anonymous.status_code == 401


def test_quickstart_again_reuses_what_exists_and_adds_a_key(
    started: Quickstarted, capsys: pytest.CaptureFixture[str]
) -> None:
    champion = Registry(started.registry).aliases()["champion"]
    keys_before = len(json.loads(started.api_keys.read_text())["keys"])

    assert main(_quickstart_argv(started.root)) == 0

    out = capsys.readouterr().out
    assert out.count("reused") == 3
    assert "kept as it is" in out
    assert Registry(started.registry).aliases()["champion"] == champion
    assert len(json.loads(started.api_keys.read_text())["keys"]) == keys_before + 1


def test_quickstart_puts_policy_and_keys_where_the_service_reads_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    args = build_parser().parse_args(["quickstart", "--no-serve"])
    monkeypatch.delenv("RISKMODEL_POLICY", raising=False)
    monkeypatch.delenv("RISKMODEL_API_KEYS", raising=False)
    plan = quickstart._plan(args)
    assert (plan.policy, plan.api_keys) == (Settings().policy, Settings().api_keys)

    monkeypatch.setenv("RISKMODEL_POLICY", str(tmp_path / "p.yaml"))
    monkeypatch.setenv("RISKMODEL_API_KEYS", str(tmp_path / "k.json"))
    plan = quickstart._plan(args)
    assert (plan.policy, plan.api_keys) == (tmp_path / "p.yaml", tmp_path / "k.json")


def test_quickstart_refuses_a_port_in_use(
    started: Quickstarted, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [a for a in _quickstart_argv(started.root) if a != "--no-serve"]
        assert main([*argv, "--port", str(port)]) == 1
    captured = capsys.readouterr()
    assert f"cannot serve on 127.0.0.1:{port}" in captured.err
    assert "==>" not in captured.out  # refused before any step ran


def test_quickstart_again_offers_a_request_the_store_has_not_seen(
    started: Quickstarted, capsys: pytest.CaptureFixture[str]
) -> None:
    with TestClient(create_app(started.settings())) as client:
        headers = {"Authorization": f"Bearer {started.key}"}
        tried = client.post("/v1/decisions", json=started.request, headers=headers)
        assert tried.status_code == 200, tried.text
        assert main(_quickstart_argv(started.root)) == 0
        key, request = _printed_call(capsys.readouterr().out)
        answer = client.post(
            "/v1/decisions", json=request, headers={"Authorization": f"Bearer {key}"}
        )
    engine = open_store(started.url)
    try:
        stored = read_table(engine, "refund_requests")
    finally:
        engine.dispose()
    assert started.request["request_id"] in set(stored["request_id"])  # the first call, kept
    assert request["order_id"] != started.request["order_id"]
    assert request["requested_at"] > started.request["requested_at"]
    assert answer.status_code == 200, answer.text
    decided = answer.json()
    assert decided["request_id"] == request["request_id"]
    earlier = {"RULE_DUPLICATE_REFUND", "RULE_REPEAT_REFUND", "RULE_EARLIER_REQUEST_OPEN"}
    assert not earlier & {reason["code"] for reason in decided["reasons"]}


def test_quickstart_leaves_the_set_up_s_libraries_and_data_to_its_child(
    started: Quickstarted,
) -> None:
    # The process that then waits on the API for as long as it runs must not have loaded
    # what the set-up needed, nor hold its data.
    probe = (
        "import sys\n"
        "from riskmodel.cli import main\n"
        f"assert main({_quickstart_argv(started.root)!r}) == 0\n"
        "heavy = ('pandas', 'numpy', 'lightgbm', 'sklearn', 'sqlalchemy')\n"
        "print('loaded:', ' '.join(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "5. create an API key" in done.stdout  # the child's output, relayed
    assert "curl -s" in done.stdout
    assert done.stdout.rstrip().endswith("loaded:")


def test_quickstart_stops_with_the_error_of_a_failed_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = tmp_path / "sim"
    sim.mkdir()
    (sim / "refund_requests.csv").write_text("not,a,table\n")
    argv = ["quickstart", "--no-serve", "--sim", str(sim),
            "--database-url", f"sqlite:///{tmp_path / 'store.db'}"]  # fmt: skip
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "reused" in captured.out  # the child's output came through, in order
    assert "error: quickstart stopped: riskmodel ingest" in captured.err
    assert "riskmodel quickstart again" in captured.err


def test_quickstart_accepts_a_port_left_in_time_wait() -> None:
    with socket.socket() as listener:
        # As uvicorn's: Linux lets a bind share a port with TIME_WAIT connections only when
        # both the new socket and the one that accepted them asked for address reuse.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = listener.accept()
        served.close()  # the server side closes first: its end waits in TIME_WAIT
        client.close()
    time.sleep(0.1)
    with socket.socket() as plain, pytest.raises(OSError, match="in use"):
        plain.bind(("127.0.0.1", port))  # a bind without address reuse still refuses it

    quickstart._check_port_free("127.0.0.1", port)  # uvicorn would bind it: so does quickstart


def test_quickstart_refuses_a_port_with_a_listener_and_says_so() -> None:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(quickstart.QuickstartError) as refused:
            quickstart._check_port_free("127.0.0.1", port)
    assert str(refused.value) == (
        f"cannot serve on 127.0.0.1:{port}: Address already in use (another API still "
        "listening there?); stop it, or pick another port with --port"
    )


# -- keys --------------------------------------------------------------------------------------


def test_keys_create_stores_the_hash_not_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys.json"
    argv = ["keys", "create", "--caller", "refund-pipeline", "--role", "decide",
            "--role", "review", "--api-keys", str(path)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    key = next(line.strip() for line in out.splitlines() if line.strip().startswith("rk_"))
    stored = path.read_text()
    assert key not in stored
    assert hashlib.sha256(key.encode()).hexdigest() in stored
    assert str(path) in out
    caller = KeyRing(path).authenticate(key)
    assert caller is not None
    assert caller.roles == frozenset({Role.DECIDE, Role.REVIEW})

    assert main(["keys", "list", "--api-keys", str(path)]) == 0
    listing = capsys.readouterr().out
    assert "refund-pipeline" in listing
    assert "decide,review" in listing
    assert key not in listing
    assert hashlib.sha256(key.encode()).hexdigest() not in listing


def test_keys_create_refuses_an_unknown_role(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["keys", "create", "--caller", "x", "--role", "root", "--api-keys", str(tmp_path)])
    assert exit_.value.code == 2


def test_a_created_key_authenticates_through_the_api(
    started: Quickstarted, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys.json"
    argv = ["keys", "create", "--caller", "support", "--role", "review", "--json",
            "--api-keys", str(keys)]  # fmt: skip
    assert main(argv) == 0
    key = json.loads(capsys.readouterr().out)["key"]
    settings = Settings(database_url=started.url, registry=started.registry,
                        policy=started.policy, api_keys=keys)  # fmt: skip
    with TestClient(create_app(settings)) as client:
        known = client.get("/v1/decisions/nothing-here", headers={"Authorization": f"Bearer {key}"})
        wrong = client.get("/v1/decisions/nothing-here", headers={"Authorization": "Bearer rk_x"})
        outside = client.post(
            "/v1/decisions", json=started.request, headers={"Authorization": f"Bearer {key}"}
        )
    assert known.status_code == 404
    assert wrong.status_code == 401
    assert outside.status_code == 403


def test_a_revoked_key_is_refused_by_the_running_service(
    started: Quickstarted, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys.json"

    def create(caller: str) -> str:
        argv = ["keys", "create", "--caller", caller, "--role", "review", "--json",
                "--api-keys", str(keys)]  # fmt: skip
        assert main(argv) == 0
        return str(json.loads(capsys.readouterr().out)["key"])

    old, new, other = create("support"), create("support"), create("audit")
    assert main(["keys", "list", "--api-keys", str(keys)]) == 0
    listing = capsys.readouterr().out
    old_id = hashlib.sha256(old.encode()).hexdigest()[:12]
    assert old_id in listing
    settings = Settings(database_url=started.url, registry=started.registry,
                        policy=started.policy, api_keys=keys)  # fmt: skip

    def status(client: TestClient, key: str) -> int:
        answer = client.get("/v1/decisions/nothing", headers={"Authorization": f"Bearer {key}"})
        return answer.status_code

    with TestClient(create_app(settings)) as client:
        assert [status(client, k) for k in (old, new, other)] == [404, 404, 404]
        # Rotation: the old key of a caller goes by its id, the new one stays.
        assert main(["keys", "revoke", "--id", old_id, "--api-keys", str(keys)]) == 0
        assert [status(client, k) for k in (old, new, other)] == [401, 404, 404]
        assert main(["keys", "revoke", "--caller", "support", "--api-keys", str(keys)]) == 0
        assert [status(client, k) for k in (old, new, other)] == [401, 401, 404]
    capsys.readouterr()
    assert main(["keys", "revoke", "--caller", "support", "--api-keys", str(keys)]) != 0
    assert "no key of caller 'support'" in capsys.readouterr().err


# -- serve -------------------------------------------------------------------------------------


def test_serve_refuses_without_a_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_uvicorn: list[dict[str, Any]]
) -> None:
    missing = tmp_path / "policy.yaml"
    assert main(["serve", "--policy", str(missing), "--registry", str(tmp_path / "reg")]) == 1
    err = capsys.readouterr().err
    assert f"no policy file at {missing}" in err
    assert "riskmodel quickstart" in err
    assert f"cp {STARTER_POLICY}" in err
    assert no_uvicorn == []


def test_serve_refuses_an_invalid_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_uvicorn: list[dict[str, Any]]
) -> None:
    policy = tmp_path / "policy.yaml"
    text = STARTER_POLICY.read_text().replace("order_earlier_refunds", "order_earlier_refundz", 1)
    policy.write_text(text)
    assert main(["serve", "--policy", str(policy), "--registry", str(tmp_path / "reg")]) == 1
    err = capsys.readouterr().err
    assert "order_earlier_refundz" in err
    assert "line" in err
    assert no_uvicorn == []


def test_serve_refuses_without_a_champion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_uvicorn: list[dict[str, Any]]
) -> None:
    policy = tmp_path / "policy.yaml"
    shutil.copyfile(STARTER_POLICY, policy)
    registry = tmp_path / "registry"
    assert main(["serve", "--policy", str(policy), "--registry", str(registry)]) == 1
    err = capsys.readouterr().err
    assert f"no model is champion yet in {registry}" in err
    assert "riskmodel train" in err
    assert "--promote champion" in err
    assert no_uvicorn == []


def test_serve_hands_its_choices_to_the_workers(
    started: Quickstarted, capsys: pytest.CaptureFixture[str], no_uvicorn: list[dict[str, Any]]
) -> None:
    import os

    argv = ["serve", *started.options(), "--port", "8123", "--workers", "3"]
    assert main(argv) == 0
    (call,) = no_uvicorn
    assert call["app"] == "serving.app:create_app"
    assert call["factory"] is True
    assert (call["host"], call["port"], call["workers"]) == ("127.0.0.1", 8123, 3)
    assert call["access_log"] is False
    # Workers build their settings from the environment: it must say what the options said.
    assert Settings.from_env() == started.settings()
    assert os.environ["OMP_NUM_THREADS"] == "1"
    out = capsys.readouterr().out
    assert "http://127.0.0.1:8123/docs" in out
    assert Registry(started.registry).aliases()["champion"] in out


def test_serve_workers_default_to_one_on_sqlite_and_one_per_cpu_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    assert default_workers("sqlite:///data/riskmodel.db") == 1
    cpus = len(os.sched_getaffinity(0))
    assert default_workers("postgresql://postgres@127.0.0.1:5432/riskmodel") == cpus
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    assert default_workers("sqlite:///data/riskmodel.db") == 3
