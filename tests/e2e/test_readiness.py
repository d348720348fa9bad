"""Given a service whose broker is unreachable, it is ready (it serves and stores), and says Kafka is degraded."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from shared.serving import gunicorn_argv
from tests.support import processes
from tests.support.auth import bearer
from tests.support.examples import minimal
from tests.support.scripts import free_port
from tests.support.waiting import wait_until


def careplan_web(tmp_path: Path, web_port: int, bootstrap: str, extra: dict[str, str]) -> processes.Proc:
    """careplan's web process, started with the deploy's gunicorn settings, its broker at `bootstrap`."""
    env = processes.service_env(tmp_path, bootstrap, {
        "IOP_CAREPLAN_PORT": str(web_port), "IOP_CAREPLAN_BASE_URL": f"http://127.0.0.1:{web_port}/fhir",
        "IOP_WEB_WORKERS": "1", **extra})
    argv = gunicorn_argv("careplan", web_port)
    return processes.Proc("careplan-web", argv, env, tmp_path / "log" / "careplan-web.log").start()


@pytest.mark.parametrize(("requires_kafka", "status", "answer"), [
    ("", 200, {"status": "ready", "checks": {"store": "ok", "kafka": "unreachable"}, "degraded": ["kafka"]}),
    ("1", 503, {"status": "not-ready", "checks": {"store": "ok", "kafka": "unreachable"}, "degraded": []}),
], ids=["by-default", "when-readiness-requires-kafka"])
def test_a_service_whose_broker_is_unreachable_serves_and_stores_and_says_kafka_is_down(
        tmp_path: Path, requires_kafka: str, status: int, answer: dict) -> None:
    web_port, nothing_there = free_port(), free_port()
    root, base = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{web_port}/fhir"
    web = careplan_web(tmp_path, web_port, f"127.0.0.1:{nothing_there}", {"IOP_READY_REQUIRES_KAFKA": requires_kafka})
    try:
        def kafka_found_unreachable() -> tuple[int, dict] | None:
            assert web.popen and web.popen.poll() is None, f"gunicorn exited; see {web.log}"
            try:
                resp = requests.get(f"{root}/readyz", timeout=10)
            except requests.RequestException:
                return None
            return (resp.status_code, resp.json()) if resp.json()["checks"]["kafka"] == "unreachable" else None

        assert wait_until(kafka_found_unreachable, 60, 0.2, "Kafka found unreachable") == (status, answer)
        metrics = requests.get(f"{root}/metrics", timeout=10).text
        assert re.search(r"^iop_kafka_up 0(\.0)?$", metrics, re.M), metrics
        created = requests.post(f"{base}/CarePlan", json=minimal("CarePlan", "no-broker"), timeout=10,
                                headers={**bearer(), "Content-Type": "application/fhir+json"})
        assert created.status_code == 201, created.text
        read = requests.get(f"{base}/CarePlan/{created.json()['id']}", headers=bearer(), timeout=10)
        assert read.status_code == 200 and read.json()["subject"]["reference"] == "Patient/no-broker"
    finally:
        web.stop()
