"""Outbox relays of several worker replicas on one store, against the real broker: one publishes at a time,
a deposed one stops, and when the publishing worker is SIGKILLed mid-stream another takes over with nothing
lost or doubled in effect and per-patient order kept.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from shared.events import kafka
from shared.events.envelope import build_event
from shared.events.relay import LEASE, OutboxRelay
from shared.replicas import holder_pid
from tests.integration.test_broker_outages import Committer
from tests.integration.test_event_backbone import (
    BASE,
    TOPIC,
    assert_in_commit_order_per_patient,
    careplan,
    commit_events,
    effects,
)
from tests.support import effect_consumer
from tests.support.broker import Broker
from tests.support.engines import ENGINES, fresh_locator, open_locator
from tests.support.events import EventWatcher, start_at_end
from tests.support.processes import Proc
from tests.support.waiting import wait_until


@pytest.fixture(params=ENGINES)
def locator(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from fresh_locator(request.param, tmp_path, request, "relays")


def running(relay: OutboxRelay, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    return thread


def on_the_wire(watcher: EventWatcher, ids: set[str]) -> Counter:
    return Counter(s.headers["ce_id"] for s in watcher.seen if s.headers.get("ce_id") in ids)


def test_given_two_relays_on_one_store_then_exactly_one_publishes_and_each_event_goes_out_once(
        broker: Broker, locator: str) -> None:
    watcher = EventWatcher(broker.bootstrap, (TOPIC,))
    stop = threading.Event()
    relays = [OutboxRelay(open_locator(locator), partial(kafka.producer, broker.bootstrap), lease_s=5)
              for _ in range(2)]
    threads = [running(r, stop) for r in relays]
    store = open_locator(locator)
    patients = [f"pt-{uuid.uuid4().hex[:6]}-{n}" for n in range(5)]
    try:
        ids: list[str] = []
        for first in range(0, 300, 30):  # batches committed while both relays watch
            ids += commit_events(store, range(first, first + 30), patients)
        wait_until(lambda: not store.unsent_events(1), 60, what="the outbox sent")
        wait_until(lambda: len(on_the_wire(watcher, set(ids))) == len(ids), 30, what="every event on the topic")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        watcher.close()
    assert sorted(r.published for r in relays) == [0, len(ids)]
    assert sorted(r.terms for r in relays) == [0, 1]  # the lease never changed hands
    assert set(on_the_wire(watcher, set(ids)).values()) == {1}
    order = [s.headers["ce_id"] for s in watcher.seen if s.headers.get("ce_id") in set(ids)]
    for patient in patients:  # per patient, the topic holds them in commit order
        mine = [i for n, i in enumerate(ids) if patients[n % len(patients)] == patient]
        assert [i for i in order if i in set(mine)] == mine


def test_given_a_relay_deposed_while_it_looked_away_then_its_marks_are_refused_and_it_stops_publishing(
        broker: Broker, locator: str) -> None:
    store = open_locator(locator)
    watcher = EventWatcher(broker.bootstrap, (TOPIC,))
    stop_a, stop_b = threading.Event(), threading.Event()
    a = OutboxRelay(open_locator(locator), partial(kafka.producer, broker.bootstrap), lease_s=30)
    b = OutboxRelay(open_locator(locator), partial(kafka.producer, broker.bootstrap), lease_s=30)
    threads = [running(a, stop_a)]
    patients = [f"pt-{uuid.uuid4().hex[:6]}"]
    try:
        before = commit_events(store, range(0, 10), patients)
        wait_until(lambda: a.published == 10, 30, what="a publishes")
        # a's lease runs out as if it had been paused past its expiry; b takes it (a larger fence).
        store.release_lease(LEASE, a.owner, a.lease.fence)
        assert b.lease.acquire() and b.lease.fence == a.lease.fence + 1
        after = commit_events(store, range(10, 30), patients)
        wait_until(lambda: not a.lease.held, 30, what="a learns that it was deposed")
        assert a.published == 10  # whatever it sent after losing the lease, it marked nothing
        assert len(store.unsent_events(100)) == 20
        threads.append(running(b, stop_b))
        # b counts a batch just after its marks commit: wait for the count, not only for the empty outbox.
        wait_until(lambda: b.published >= 20, 30, what="b sends what a could not mark")
        assert not store.unsent_events(1)
        wait_until(lambda: set(on_the_wire(watcher, set(before + after))) == set(before + after), 30,
                   what="every event on the topic")
        assert b.published == 20 and a.published == 10 and a.terms == 1
    finally:
        stop_a.set()
        stop_b.set()
        for t in threads:
            t.join(30)
        watcher.close()
    wire = on_the_wire(watcher, set(before + after))
    assert all(wire[i] == 1 for i in before)
    # The first occurrences keep commit order; a late copy from the deposed relay is what consumers skip.
    firsts = list(dict.fromkeys(s.headers["ce_id"] for s in watcher.seen if s.headers.get("ce_id") in wire))
    assert firsts == before + after


def test_given_the_publishing_worker_sigkilled_mid_stream_then_the_other_takes_over_with_nothing_lost_or_doubled(
        broker: Broker, tmp_path: Path) -> None:
    db = tmp_path / "worker.db"
    store = effect_consumer.effect_store(str(db))
    service = f"relays-{uuid.uuid4().hex[:6]}"
    start_at_end(broker.bootstrap, f"iop-{service}", [TOPIC])
    env = {**os.environ, "IOP_RELAY_LEASE_S": "2"}
    argv = [sys.executable, "-m", "tests.support.effect_worker", str(db), service, TOPIC, "--servers", broker.bootstrap]
    workers = [Proc(f"relay-replica-{n}", argv, env, tmp_path / f"worker-{n}.log").start() for n in range(2)]
    committer = Committer(store, [f"pt-{service}-{n}" for n in range(6)], every_s=0.02)
    try:
        committer.start()
        holder = wait_until(lambda: store.lease(LEASE), 60, what="a relay holds the lease")[0]
        wait_until(lambda: len(effects(store, committer.ids)) >= 50, 60, what="events streaming through")
        leader = next(w for w in workers if w.popen.pid == holder_pid(holder))
        leader.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        new = wait_until(lambda: (lease := store.lease(LEASE)) and lease[0] != holder and lease, 30,
                         what="another relay takes the lease")
        takeover_s = time.monotonic() - killed_at
        sent_then = committer.next
        wait_until(lambda: len(effects(store, committer.ids)) >= sent_then, 90, what="events flowing again")
        ids = committer.stop()
        wait_until(lambda: len({r[1] for r in effects(store, ids)}) == len(ids), 90, what="every event applied")
        survivor = next(w for w in workers if w is not leader)
        assert survivor.alive and holder_pid(new[0]) == survivor.popen.pid and new[1] > 0
    finally:
        committer.stop()
        for w in workers:
            w.stop()
    rows = effects(store, ids)
    assert len(rows) == len(ids), "an event took effect twice"
    assert_in_commit_order_per_patient(rows)
    assert not store.unsent_events(1)
    print(f"\nrelay takeover after SIGKILL: {takeover_s:.2f} s with IOP_RELAY_LEASE_S=2; "
          f"{len(ids)} events, 0 lost, 0 doubled in effect")


def test_given_two_relay_workers_and_the_publishing_one_sigkilled_then_every_event_is_on_the_topic_in_order(
        broker: Broker, locator: str, tmp_path: Path) -> None:
    """The same takeover, seen on the topic: nothing missing, per-patient first arrivals in commit order, and
    the only copies those of the batch the dead relay had sent but not marked."""
    store = open_locator(locator)
    watcher = EventWatcher(broker.bootstrap, (TOPIC,))
    env = {**os.environ, "IOP_RELAY_LEASE_S": "2"}
    argv = [sys.executable, "-m", "tests.support.relay_worker", locator, "--servers", broker.bootstrap]
    workers = [Proc(f"relay-only-{n}", argv, env, tmp_path / f"relay-{n}.log").start() for n in range(2)]
    committer = Committer(store, [f"pt-{uuid.uuid4().hex[:6]}-{n}" for n in range(6)], every_s=0.02)
    try:
        committer.start()
        holder = wait_until(lambda: store.lease(LEASE), 60, what="a relay holds the lease")[0]
        wait_until(lambda: len(on_the_wire(watcher, committer.ids)) >= 50, 60, what="events on the topic")
        next(w for w in workers if w.popen.pid == holder_pid(holder)).signal(signal.SIGKILL)
        wait_until(lambda: store.lease(LEASE)[0] != holder, 30, what="another relay takes the lease")
        sent_then = committer.next
        wait_until(lambda: len(on_the_wire(watcher, committer.ids)) >= sent_then, 60, what="events flowing again")
        ids = committer.stop()
        wait_until(lambda: len(on_the_wire(watcher, ids)) == len(ids), 60, what="every event on the topic")
    finally:
        committer.stop()
        for w in workers:
            w.stop()
        watcher.close()
    wire = on_the_wire(watcher, ids)
    copies = sum(wire.values()) - len(ids)
    assert set(ids) == set(wire), "an event was lost"
    assert copies <= 500, "more copies than one unmarked batch"  # relay.BATCH
    by_patient: dict[str, list[int]] = {}
    for seen in dict.fromkeys((s.key, s.headers["ce_id"], s.focus["id"]) for s in watcher.seen
                              if s.headers.get("ce_id") in wire):
        by_patient.setdefault(seen[0], []).append(int(seen[2].removeprefix("cp-")))
    for patient, numbers in by_patient.items():
        assert numbers == sorted(numbers), f"patient {patient} out of commit order"
    print(f"\n{len(ids)} events, 0 lost, {copies} sent twice around the SIGKILL (consumers skip them by ce_id); "
          f"lease fence {store.lease(LEASE)[1]} (1 + each change of holder)")


def test_on_postgresql_a_transaction_still_open_holds_back_later_commits_which_then_go_out_in_commit_order(
        broker: Broker, pg_server, tmp_path: Path) -> None:
    """The gap of SCALEOUT §2.3: A takes the lower outbox seq, B a higher one and commits first. The relay
    publishes neither while A is open (B alone would be out of order; B then A would skip nothing, but
    reorder), and both, A first, once A commits."""
    url = pg_server.create_database("gap")
    store = open_locator(url)
    watcher = EventWatcher(broker.bootstrap, (TOPIC,))
    stop = threading.Event()
    # A long lease: its renewals (a third of it) would re-scan only after the test is over, so the relay
    # publishes here because the commits rang its LISTEN doorbell.
    relay = OutboxRelay(open_locator(url), partial(kafka.producer, broker.bootstrap), lease_s=180)
    thread = running(relay, stop)
    patient = f"pt-{uuid.uuid4().hex[:6]}"
    opened, release, ids = threading.Event(), threading.Event(), []

    def slow_writer() -> None:
        with store.transaction() as tx:
            ids.extend(commit_in(tx, 1, patient))
            opened.set()
            release.wait(60)

    try:
        wait_until(lambda: relay.lease.held, 30, what="the relay leads")
        ids.extend(commit_events(store, range(0, 1), [patient]))  # the doorbell works: published at once
        wait_until(lambda: relay.published == 1, 30, what="a first commit published on its NOTIFY")
        writer = threading.Thread(target=slow_writer, daemon=True)
        writer.start()
        assert opened.wait(30)
        scans = relay.scans
        ids.extend(commit_events(store, range(2, 3), [patient]))  # B: a higher seq, committed while A is open
        wait_until(lambda: relay.scans > scans, 30, what="the relay woke on B's commit")
        unsent = store._query("SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL")[0]["n"]
        assert unsent == 1 and store.unsent_events(10) == []  # B is committed, and held back by the fence
        assert relay.published == 1
        release.set()
        writer.join(30)
        wait_until(lambda: relay.published == 3, 30, what="A and B published once A committed")
        wait_until(lambda: len(on_the_wire(watcher, set(ids))) == 3, 30, what="all three on the topic")
    finally:
        release.set()
        stop.set()
        thread.join(30)
        watcher.close()
    order = [s.headers["ce_id"] for s in watcher.seen if s.headers.get("ce_id") in set(ids)]
    first, a, b = ids[0], ids[1], ids[2]
    assert order == [first, a, b]  # commit order of the rows' sequence: A (seq 2) before B (seq 3), each once
    assert set(on_the_wire(watcher, set(ids)).values()) == {1}


def commit_in(tx, n: int, patient: str) -> list[str]:
    event = build_event("iop.careplan.created", BASE, patient, careplan(n, patient))
    tx.add_event(event)
    return [dict(event.headers)["ce_id"]]
