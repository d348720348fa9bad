"""A client's delete wins over the work aftercare's worker had queued for the Subscription."""
from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from services.aftercare.samples import subscription
from shared.fhir.store import Store
from tests.e2e.test_journey import JSON
from tests.support.auth import http
from tests.support.interrupting_endpoint import InterruptingEndpoint
from tests.support.ports import port
from tests.support.postgres import service_store
from tests.support.processes import Proc, base_url
from tests.support.receiver import Receiver
from tests.support.waiting import wait_until

AFTERCARE = base_url("aftercare")
ORGANISATION = "Organization/ehr-lifecycle"
TROUBLE = ('"level":"error"', "dead-lettered", "handler failed")


def delete_subscription(sid: str) -> None:
    assert http.delete(f"{AFTERCARE}/Subscription/{sid}", timeout=10).status_code == 204


@pytest.fixture
def deleting_endpoint(suite) -> Iterator[InterruptingEndpoint]:
    """An EHR whose client deletes the Subscription while its first handshake is in flight."""
    endpoint = InterruptingEndpoint(port(18104), delete_subscription)
    yield endpoint
    endpoint.close()


@pytest.fixture
def receiver(suite, tmp_path) -> Iterator[Receiver]:
    r = Receiver(port(18105), tmp_path)
    yield r
    r.proc.kill()


@pytest.fixture
def worker_log(suite) -> Iterator[Proc]:
    """The aftercare worker; the test fails if it logged an error, a handler failure or a dead letter meanwhile."""
    proc = suite["aftercare-worker"]
    start = proc.log.stat().st_size
    yield proc
    with proc.log.open("rb") as log:
        log.seek(start)
        new = log.read().decode(errors="replace")
    assert not [line for line in new.splitlines() if any(t in line for t in TROUBLE)]


def aftercare_store(worker: Proc) -> Store:
    return service_store(worker.env, "aftercare")


def post_subscription(endpoint: str) -> str:
    sub = subscription("careplan-revised", f"pt-{uuid.uuid4().hex[:8]}", endpoint, ORGANISATION, timeout_s=5)
    resp = http.post(f"{AFTERCARE}/Subscription", json=sub, headers=JSON, timeout=10)
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def assert_stays_deleted(sid: str) -> None:
    assert http.get(f"{AFTERCARE}/Subscription/{sid}", timeout=10).status_code == 410
    history = http.get(f"{AFTERCARE}/Subscription/{sid}/_history", timeout=10).json()
    methods = [e["request"]["method"] for e in history["entry"]]  # newest first
    assert methods[0] == "DELETE" and methods.count("DELETE") == 1 and methods[-1] == "POST", methods


def handshake_audited(sid: str) -> bool:
    found = http.get(f"{AFTERCARE}/AuditEvent", params={"entity": f"Subscription/{sid}"}, timeout=10).json()
    return any(e["resource"]["entity"][0].get("description") == "handshake" for e in found.get("entry", []))


def test_a_subscription_deleted_while_its_handshake_is_in_flight_stays_deleted(
        deleting_endpoint: InterruptingEndpoint, worker_log: Proc) -> None:
    sids = [post_subscription(deleting_endpoint.url) for _ in range(3)]
    # The handshake's audit record commits in the transaction that would have written the Subscription again.
    wait_until(lambda: all(handshake_audited(sid) for sid in sids), 30, what="handshakes answered")
    assert not deleting_endpoint.errors and sorted(deleting_endpoint.interrupted) == sorted(sids)
    store = aftercare_store(worker_log)
    wait_until(lambda: not any(store.work(f"sub:{sid}", ("queued",), 1) for sid in sids), 30,
               what="the dropped handshakes cancelled")
    for sid in sids:
        assert_stays_deleted(sid)
        assert deleting_endpoint.kinds(sid) == ["handshake"]  # never handshaken again


def test_twenty_subscriptions_posted_and_deleted_at_once_all_stay_deleted(receiver: Receiver,
                                                                          worker_log: Proc) -> None:
    store, sids = aftercare_store(worker_log), []
    for mode in ("slow", "ok"):  # a slow EHR holds the handshake in flight; a quick one races the delete
        receiver.mode(mode, delay_s=0.2)
        for _ in range(10):
            sid = post_subscription(receiver.url + "/notify")
            assert http.delete(f"{AFTERCARE}/Subscription/{sid}", timeout=10).status_code == 204
            sids.append(sid)
    wait_until(lambda: not any(store.work(f"sub:{sid}", ("queued",), 1) for sid in sids), 60,
               what="every handshake done or cancelled")
    for sid in sids:
        assert_stays_deleted(sid)
