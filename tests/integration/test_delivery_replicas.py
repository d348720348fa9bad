"""Two aftercare delivery workers (separate processes, one store) sharing the EHR subscription queues, with
real HTTP endpoints: one EHR down for a while, one worker SIGKILLed. Every notification reaches each
subscription once, in per-patient order, with event numbers without gaps, and the live EHR does not wait.
"""
from __future__ import annotations

import json
import os
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.aftercare.resources import build_registry
from services.aftercare.samples import consent, event_numbers, focus_references, notification_status, subscription
from shared.config import Settings
from shared.fhir.registry import Repository
from shared.replicas import holder_pid
from tests.support.engines import ENGINES, fresh_locator, open_locator
from tests.support.ports import port
from tests.support.processes import Proc
from tests.support.receiver import Receiver
from tests.support.waiting import wait_until

CAREPLAN_BASE = "http://127.0.0.1:8082/fhir"
PATIENTS = ("p1", "p2", "p3")
EVENTS = 12  # per patient


class Setup:
    def __init__(self, tmp_path: Path, locator: str) -> None:
        self.tmp_path = tmp_path
        self.settings = Settings("aftercare", database=locator)
        self.store = open_locator(locator)
        self.repo = Repository(build_registry(self.settings))
        self.env = {**os.environ, "IOP_VAR_DIR": str(tmp_path), "IOP_WORK_CLAIM_S": "3",
                    "IOP_DELIVERY_BACKOFF_BASE_S": "0.2", "IOP_DELIVERY_BACKOFF_CAP_S": "1"}
        self.workers: list[Proc] = []

    def subscribe(self, receiver: Receiver, organisation: str) -> dict[str, str]:
        """One Subscription per patient at this EHR; patient -> subscription id."""
        subs = {}
        with self.store.transaction() as tx:
            for patient in PATIENTS:
                sub = subscription("careplan-revised", patient, f"{receiver.url}/notify", organisation, timeout_s=2)
                subs[patient] = self.repo.create(tx, sub).id
        return subs

    def start_worker(self) -> Proc:
        n = len(self.workers)
        argv = [sys.executable, "-m", "tests.support.delivery_worker", self.settings.database]
        self.workers.append(Proc(f"delivery-replica-{n}", argv, self.env, self.tmp_path / f"delivery-{n}.log").start())
        return self.workers[-1]

    def active(self, sids: list[str]) -> bool:
        return all(self.store.read("Subscription", s).resource["status"] == "active" for s in sids)

    def revise(self, k: int, subs: list[dict[str, str]]) -> None:
        """Revision k of each patient's plan, queued for every subscription to that patient (as the consumer
        of iop.careplan.revised queues it, in the event's transaction)."""
        for patient in PATIENTS:
            plan = {"resourceType": "CarePlan", "id": f"cp-{patient}", "meta": {"versionId": str(k + 1)},
                    "status": "active", "intent": "plan", "subject": {"reference": f"Patient/{patient}"}}
            with self.store.transaction() as tx:
                for by_patient in subs:
                    tx.enqueue(f"sub:{by_patient[patient]}", {
                        "kind": "event", "type": "iop.careplan.revised", "patient": patient,
                        "ce_id": str(uuid.uuid4()), "time": "2026-03-02T09:00:00Z",
                        "focus": f"CarePlan/cp-{patient}/_history/{k + 1}", "source_base": CAREPLAN_BASE,
                        "resources": [plan]})


@pytest.fixture(params=ENGINES)
def locator(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from fresh_locator(request.param, tmp_path, request, "aftercare")


@pytest.fixture
def setup(tmp_path: Path, locator: str) -> Iterator[Setup]:
    s = Setup(tmp_path, locator)
    yield s
    for w in s.workers:
        w.stop()


@pytest.fixture
def ehrs(tmp_path: Path) -> Iterator[tuple[Receiver, Receiver]]:
    a, b = Receiver(port(18111), tmp_path), Receiver(port(18112), tmp_path)
    yield a, b
    a.proc.kill()
    b.proc.kill()


def delivered(receiver: Receiver) -> dict[str, list[tuple[int, str]]]:
    """Per subscription id, the (event number, focus) of each event notification, in arrival order."""
    got: dict[str, list[tuple[int, str]]] = {}
    for bundle in receiver.notifications():
        sid = notification_status(bundle)["subscription"]["reference"].rsplit("/", 1)[-1]
        got.setdefault(sid, []).extend(zip(event_numbers(bundle), focus_references(bundle), strict=True))
    return got


def expected(patient: str) -> list[tuple[int, str]]:
    return [(k + 1, f"{CAREPLAN_BASE}/CarePlan/cp-{patient}/_history/{k + 1}") for k in range(EVENTS)]


def complete(receiver: Receiver, subs: dict[str, str]) -> bool:
    got = delivered(receiver)
    return all(len({n for n, _ in got.get(sid, [])}) == EVENTS for sid in subs.values())


def test_given_two_workers_and_one_ehr_down_for_a_while_then_each_subscription_gets_every_notification_once_in_order(
        setup: Setup, ehrs: tuple[Receiver, Receiver]) -> None:
    live, down = ehrs
    with setup.store.transaction() as tx:
        for patient in PATIENTS:
            setup.repo.create(tx, consent(patient, ["Organization/ehr-a", "Organization/ehr-b"]))
    at_live, at_down = setup.subscribe(live, "Organization/ehr-a"), setup.subscribe(down, "Organization/ehr-b")
    setup.start_worker()
    setup.start_worker()
    wait_until(lambda: setup.active([*at_live.values(), *at_down.values()]), 60, what="every handshake done")
    down.mode("hang")  # down: each attempt waits for its 2 s timeout, and is retried
    for k in range(EVENTS):
        setup.revise(k, [at_live, at_down])
    # The live EHR gets everything while the other is still down: it waits for nobody.
    wait_until(lambda: complete(live, at_live), 60, what="the live EHR has every notification")
    assert not delivered(down)
    holders = [setup.store.lease(f"work:sub:{sid}")[0] for sid in [*at_live.values(), *at_down.values()]]
    down.mode("ok")
    wait_until(lambda: complete(down, at_down), 90, what="the EHR that came back has every notification")
    for receiver, subs in ((live, at_live), (down, at_down)):
        got = delivered(receiver)
        for patient, sid in subs.items():
            assert got[sid] == expected(patient), f"{patient} at {receiver.url}"  # once each, in order, no gaps
    assert all(w.alive for w in setup.workers)
    assert {holder_pid(h) for h in holders} <= {w.popen.pid for w in setup.workers}
    print(f"\nsubscriptions per worker: {sorted(Counter(holder_pid(h) for h in holders).values())}")


def test_given_the_worker_draining_a_subscription_sigkilled_then_the_other_reclaims_it_and_carries_on_in_order(
        setup: Setup, ehrs: tuple[Receiver, Receiver]) -> None:
    ehr, _ = ehrs
    with setup.store.transaction() as tx:
        for patient in PATIENTS:
            setup.repo.create(tx, consent(patient, ["Organization/ehr-a"]))
    subs = setup.subscribe(ehr, "Organization/ehr-a")
    first, second = setup.start_worker(), setup.start_worker()
    wait_until(lambda: setup.active(list(subs.values())), 60, what="every handshake done")
    ehr.mode("slow", delay_s=0.3)  # deliveries in flight when the worker dies
    for k in range(EVENTS):
        setup.revise(k, [subs])
    sid = subs["p1"]
    wait_until(lambda: len(delivered(ehr).get(sid, [])) >= 2, 60, what="p1's notifications under way")
    holder = setup.store.lease(f"work:sub:{sid}")[0]
    victim = next(w for w in setup.workers if w.popen.pid == holder_pid(holder))
    victim.kill()
    survivor = second if victim is first else first
    wait_until(lambda: complete(ehr, subs), 90, what="every notification delivered after the kill")
    assert holder_pid(setup.store.lease(f"work:sub:{sid}")[0]) == survivor.popen.pid
    got = delivered(ehr)
    for patient, s in subs.items():
        arrivals = got[s]
        # At least once: the one notification in flight at the kill may come twice, with its own event number.
        assert list(dict.fromkeys(arrivals)) == expected(patient), patient
        assert len(arrivals) - EVENTS <= 1, patient
    audit = json.dumps([r.resource for r in setup.store.search("AuditEvent", [], "r.created_seq", 1000, 0).items])
    assert "event 12" in audit
