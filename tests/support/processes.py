"""Services started as real processes: gunicorn web processes and workers, on test ports."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from shared.config import ROOT
from shared.serving import gunicorn_argv
from tests.support.auth import TEST_SECRET
from tests.support.ports import port as test_port
from tests.support.smart import SUITE_CLIENTS, write_clients
from tests.support.waiting import wait_until

TEST_PORTS = {"intake": test_port(18081), "careplan": test_port(18082), "encounters": test_port(18083),
              "aftercare": test_port(18084)}


WORKER_METRICS_PORTS = {name: test_port(18411 + i) for i, name in enumerate(TEST_PORTS)}


def worker_metrics_env() -> dict[str, str]:
    return {f"IOP_{name.upper()}_WORKER_METRICS_PORT": str(p) for name, p in WORKER_METRICS_PORTS.items()}


def service_env(var_dir: Path, bootstrap: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "IOP_VAR_DIR": str(var_dir), "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
           "IOP_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
           # EHR retries in seconds, not minutes, so outage tests finish quickly.
           "IOP_DELIVERY_BACKOFF_BASE_S": "0.2", "IOP_DELIVERY_BACKOFF_CAP_S": "2",
           "IOP_AUTH_HS256_SECRET": TEST_SECRET}
    var_dir.mkdir(parents=True, exist_ok=True)  # the SMART Backend Services clients the suite knows
    env["IOP_SMART_CLIENTS"] = str(write_clients(var_dir / "smart-clients.json", SUITE_CLIENTS))
    for name, port in TEST_PORTS.items():
        env[f"IOP_{name.upper()}_PORT"] = str(port)
        env[f"IOP_{name.upper()}_BASE_URL"] = f"http://127.0.0.1:{port}/fhir"
    env.update(extra or {})
    return env


class Proc:
    started: list[Proc] = []  # every process a test started, so that their logs can be checked after each test

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.popen: subprocess.Popen | None = None

    def start(self) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.popen = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        Proc.started.append(self)
        return self

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.popen and self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 20) -> int | None:
        if self.popen is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return self.popen.wait(5)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.popen:
            self.popen.wait(10)


def web(service: str, env: dict[str, str], var_dir: Path, port: int | None = None) -> Proc:
    port = port or TEST_PORTS[service]
    return Proc(f"{service}-web", gunicorn_argv(service, port, workers=1, threads=4), env,
                var_dir / "log" / f"{service}-web.log")


def worker(service: str, env: dict[str, str], var_dir: Path) -> Proc:
    return Proc(f"{service}-worker", [sys.executable, "-m", f"services.{service}.worker"], env,
                var_dir / "log" / f"{service}-worker.log")


def wait_ready(service: str, timeout: float = 60) -> None:
    url = f"http://127.0.0.1:{TEST_PORTS[service]}/readyz"

    def ready() -> bool:
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(ready, timeout, 0.1, f"{service} ready")


def base_url(service: str) -> str:
    return f"http://127.0.0.1:{TEST_PORTS[service]}/fhir"
