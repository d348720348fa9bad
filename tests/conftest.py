"""Fixtures: the real broker (started once per session), service processes, temporary stores.

Every test that uses the broker fails when an event reached a dead-letter topic or a handler error was logged
while it ran, unless it declares that it expects them (`expect_dead_letters`, `expect_handler_errors`).
"""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import processes
from tests.support.broker import Broker
from tests.support.failure_watch import FailureWatch
from tests.support.hapi_server import HapiServer
from tests.support.jvm import quick_by_default
from tests.support.otlp import OtlpReceiver
from tests.support.ports import port
from tests.support.postgres import PgServer, shared_server, test_engine
from tests.support.scripts import TEST_VAR

pytest_plugins = ["pytester"]
quick_by_default()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `postgresql` restart the run's PostgreSQL server: on a SQLite run they are deselected."""
    if test_engine() == "postgresql":
        return
    deselected = [item for item in items if item.get_closest_marker("postgresql")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("postgresql")]


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """The real Kafka broker, formatted fresh for this run, stopped at the end."""
    b = Broker(TEST_VAR)
    b.start(fresh=True)
    yield b
    b.stop()


@pytest.fixture(scope="session")
def otlp() -> Iterator[OtlpReceiver]:
    """Where the suite's processes export their spans."""
    receiver = OtlpReceiver(port(18410))
    yield receiver
    receiver.close()


@pytest.fixture(scope="session")
def suite(broker: Broker, otlp: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[dict[str, processes.Proc]]:
    """All four services running as real processes (gunicorn web + worker) against the broker."""
    var_dir = tmp_path_factory.mktemp("suite")
    env = processes.service_env(var_dir, broker.bootstrap, {**otlp.env, **processes.worker_metrics_env()})
    if test_engine() == "postgresql":  # IOP_TEST_STORE=postgresql: each service on a new database
        for service in processes.TEST_PORTS:
            env[f"IOP_{service.upper()}_DB"] = shared_server().create_database(f"suite_{service}")
    procs: dict[str, processes.Proc] = {}
    for service in processes.TEST_PORTS:
        procs[f"{service}-web"] = processes.web(service, env, var_dir).start()
        procs[f"{service}-worker"] = processes.worker(service, env, var_dir).start()
    try:
        for service in processes.TEST_PORTS:
            processes.wait_ready(service)
        yield procs
    finally:
        for p in procs.values():
            p.stop()
        shutil.copytree(var_dir / "log", TEST_VAR / "suite-logs", dirs_exist_ok=True)


@pytest.fixture(scope="session")
def hapi() -> Iterator[HapiServer]:
    """A real, independent FHIR server (HAPI FHIR, in memory) standing in for a hospital EHR. It checks what it
    is sent against US Core on the SQLite run; the PostgreSQL run sends the same resources from another store and
    starts it without the profiles (a sixth of the CPU)."""
    with HapiServer(port(18090), validation=test_engine() == "sqlite") as server:
        yield server


@pytest.fixture(scope="session")
def pg_server() -> PgServer:
    """A throwaway PostgreSQL server on port(18432), started once per session when a test needs it."""
    return shared_server()


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "store.db")


@pytest.fixture(scope="session")
def failure_watch(broker: Broker) -> Iterator[FailureWatch]:
    watch = FailureWatch(broker.bootstrap)
    yield watch
    watch.close()


@pytest.fixture
def expect_dead_letters() -> None:
    """This test dead-letters on purpose; at least one record must reach a DLQ while it runs."""


@pytest.fixture
def expect_handler_errors() -> None:
    """This test makes a handler fail on purpose; at least one handler error must be logged while it runs."""


@pytest.fixture(autouse=True)
def no_unexpected_dead_letters(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails a test that uses the broker when a DLQ gained a record or a handler error was logged during it."""
    if "broker" not in request.fixturenames:
        yield
        return
    watch: FailureWatch = request.getfixturevalue("failure_watch")
    window = watch.open()
    yield
    findings = watch.close_window(window)
    problems = []
    for what, declared in (("dead letter", "expect_dead_letters"), ("handler error", "expect_handler_errors")):
        found = [f for f in findings if f.what == what]
        if declared in request.fixturenames:
            if not found:
                problems.append(f"the test declares {declared}, but no {what} happened")
        else:
            problems += [str(f) for f in found]
    if problems:
        pytest.fail("events went wrong during the test:\n  " + "\n  ".join(problems), pytrace=False)
