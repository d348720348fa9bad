"""A worker through broker outages of 10 s, 35 s and 60 s (each longer than the clients' request, delivery and
session timeouts, the last two longer than the metadata refresh) while events keep being committed, the first outage
already under way when it starts: everything committed arrives within seconds of the broker's return, once
each, in commit order per patient, without a restart of the worker (its relay and consumer resume by themselves).

The broker stops while the relay streams, so that sends are in flight and retried when it goes: once those
batches expire, kafka-python's idempotent producer is broken for good (every later flush times out).
On PostgreSQL (IOP_TEST_STORE=postgresql) the worker's store is a database and only the 10 s outage is run: the
longer ones try the producer, not the store.
"""
from __future__ import annotations

import sys
import threading
import time
import uuid
from pathlib import Path

from shared.fhir.store import Store
from tests.integration.test_event_backbone import TOPIC, assert_in_commit_order_per_patient, commit_events, effects
from tests.support import effect_consumer
from tests.support.broker import Broker
from tests.support.events import start_at_end
from tests.support.postgres import store_locator
from tests.support.postgres import test_engine as store_engine
from tests.support.processes import Proc
from tests.support.waiting import wait_until

OUTAGES_S = (10, 35, 60) if store_engine() == "sqlite" else (10,)
RECOVERY_S = 30  # from the broker answering again to the last event applied


class Committer:
    """Commits one event every `every_s` into the outbox, from a thread, as a busy service would."""

    def __init__(self, store: Store, patients: list[str], every_s: float = 0.05) -> None:
        self.store, self.patients, self.every_s = store, patients, every_s
        self.ids: set[str] = set()
        self.next = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.ids.update(commit_events(self.store, range(self.next, self.next + 1), self.patients))
            self.next += 1

    def stop(self) -> set[str]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        return set(self.ids)


def test_given_broker_outages_then_every_event_committed_meanwhile_arrives_once_and_in_order(
        broker: Broker, tmp_path: Path) -> None:
    db = store_locator(tmp_path / "worker.db")
    store = effect_consumer.effect_store(db)
    service = f"outage-{uuid.uuid4().hex[:6]}"
    start_at_end(broker.bootstrap, f"iop-{service}", [TOPIC])
    committer = Committer(store, [f"pt-{service}-{n}" for n in range(6)])
    argv = [sys.executable, "-m", "tests.support.effect_worker", db, service, TOPIC, "--servers", broker.bootstrap]
    worker = None
    try:
        for outage in OUTAGES_S:
            committer.start()
            if worker is not None:  # the broker is up: events stream through before it goes
                wait_until(lambda: len(effects(store, committer.ids)) >= committer.next - 5 > 0, 60,
                           what="events streaming through")
            broker.stop()  # a controlled shutdown: in-flight sends are answered "not the leader", and retried
            if worker is None:
                worker = Proc("outage-worker", argv, None, tmp_path / "worker.log").start()
            time.sleep(outage)  # the outage itself: events keep being committed all along
            ids = committer.stop()
            broker.start()
            wait_until(lambda ids=ids: len({r[1] for r in effects(store, ids)}) == len(ids), RECOVERY_S,
                       what=f"every event committed up to the end of the {outage} s outage, applied")
            assert worker.alive, "the worker died"
    finally:
        committer.stop()
        if worker is not None:
            worker.stop()
    rows = effects(store, committer.ids)
    assert len(rows) == len(committer.ids), "an event took effect twice"
    assert_in_commit_order_per_patient(rows)
    assert not store.unsent_events(1)
