"""Fixtures: the real broker (started once per session), service processes, temporary stores."""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.config import ROOT
from tests.support import processes
from tests.support.broker import Broker
from tests.support.hapi_server import HapiServer
from tests.support.ports import port

TEST_VAR = ROOT / "var" / "test"


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """The real Kafka broker, formatted fresh for this run, stopped at the end."""
    b = Broker(TEST_VAR)
    b.start(fresh=True)
    yield b
    b.stop()


@pytest.fixture(scope="session")
def suite(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, processes.Proc]]:
    """All four services running as real processes (gunicorn web + worker) against the broker."""
    var_dir = tmp_path_factory.mktemp("suite")
    env = processes.service_env(var_dir, broker.bootstrap)
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
    """A real, independent FHIR server (HAPI FHIR, in memory) standing in for a hospital EHR."""
    with HapiServer(port(18090)) as server:
        yield server


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "store.db")
