"""PostgreSQL restarted under the running suite while intakes stream in (IOP_TEST_STORE=postgresql).

While it is down, intake answers 503 with an OperationOutcome and Retry-After, within the bounded store
timeouts (a request that hung would fail the client's own timeout), never a 500; the services come back
without a restart, and every intake they accepted yields its CarePlan exactly once.
"""
from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import requests

from services.intake.samples import created_id, partner_submission
from tests.support.auth import http
from tests.support.events import EventWatcher
from tests.support.postgres import shared_server
from tests.support.processes import Proc, base_url
from tests.support.waiting import wait_until

pytestmark = pytest.mark.postgresql  # deselected on a SQLite run: there is no server to restart
INTAKE, CAREPLAN = base_url("intake"), base_url("careplan")
JSON = {"Content-Type": "application/fhir+json"}
CLIENT_TIMEOUT_S = 30  # far above IOP_PG_TIMEOUT_S and IOP_PG_STATEMENT_TIMEOUT_MS: only a hang reaches it


class Stream:
    """Intakes posted one after another from a thread, each answer kept."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict, dict[str, str], float]] = []
        self.accepted: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                resp = http.post(INTAKE, json=partner_submission(), headers=JSON, timeout=CLIENT_TIMEOUT_S)
            except requests.RequestException as exc:
                self.failures.append(type(exc).__name__)
                continue
            body = resp.json() if resp.headers.get("Content-Type", "").startswith("application/fhir+json") else {}
            self.answers.append((resp.status_code, body, dict(resp.headers), time.monotonic() - started))
            if resp.status_code == 200:
                self.accepted.append(created_id(body, "Patient"))
            self._stop.wait(0.05)

    def start(self) -> Stream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(CLIENT_TIMEOUT_S + 10)

    def count(self, status: int) -> int:
        return sum(1 for a in self.answers if a[0] == status)


def test_given_postgresql_restarts_mid_stream_then_intake_is_503_meanwhile_and_every_accepted_intake_has_one_plan(
        suite: dict[str, Proc], watcher: EventWatcher) -> None:
    server = shared_server()
    stream = Stream().start()
    try:
        wait_until(lambda: len(stream.accepted) >= 10, 120, what="10 intakes accepted")
        server.stop()
        try:
            wait_until(lambda: stream.count(503) >= 3, 120, what="503s while the store is down")
        finally:
            server.start()
        back = len(stream.accepted)
        wait_until(lambda: len(stream.accepted) >= back + 10, 180, what="10 intakes accepted after the restart")
    finally:
        stream.stop()

    statuses = Counter(a[0] for a in stream.answers)
    assert stream.failures == [] and set(statuses) <= {200, 503}, (statuses, stream.failures)
    for status, body, headers, _ in stream.answers:
        if status == 503:
            assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "transient"
            assert int(headers["Retry-After"]) >= 1
    assert all(p.alive for p in suite.values()), "a service process died instead of waiting for the store"
    for patient in stream.accepted:
        watcher.wait_for("iop.careplan.created", patient, timeout=180)
    for patient in stream.accepted:
        assert len({s.headers["ce_id"] for s in watcher.events("iop.careplan.created", patient)}) == 1
        plans = http.get(f"{CAREPLAN}/CarePlan", params={"patient": patient}, timeout=10).json()
        assert plans["total"] == 1, patient
    slowest = max(a[3] for a in stream.answers)
    print(f"store restart: {statuses[200]} accepted, {statuses[503]} x 503, slowest answer {slowest:.1f}s")
