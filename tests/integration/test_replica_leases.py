"""Leases and once-per-period jobs on a real store (shared/replicas.py), as worker replicas use them.

The lease is what lets one relay publish and one worker drain a subscription's queue; its fence is what
stops a holder that was deposed while it looked away. Each test gets an empty store of every adapter.
"""
from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.fhir.store import OutboxEvent, SQLiteCommitWatch, SQLiteStore, Store
from shared.replicas import Lease, claim_period
from tests.support.engines import ENGINES, fresh_locator
from tests.support.engines import open_locator as open_store
from tests.support.waiting import wait_until


@pytest.fixture(params=ENGINES)
def locator(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from fresh_locator(request.param, tmp_path, request)


@pytest.fixture
def store(locator: str) -> Iterator[Store]:
    opened = open_store(locator)
    yield opened
    getattr(opened, "close", lambda: None)()


def event(n: int) -> OutboxEvent:
    return OutboxEvent("iop.careplan.events", "alice", [("ce_id", f"evt-{n}")], f'{{"n": {n}}}')


def test_a_lease_has_one_holder_until_it_expires_and_each_new_holder_a_larger_fence(store: Store) -> None:
    first = store.claim_lease("relay", "a", 0.3)
    assert first == 1
    assert store.claim_lease("relay", "b", 0.3) is None
    assert store.claim_lease("relay", "a", 0.3) == first  # asking again keeps the fence
    wait_until(lambda: store.claim_lease("relay", "b", 30) is not None, 5, what="the expired lease taken over")
    holder, fence, _ = store.lease("relay")
    assert (holder, fence) == ("b", first + 1)
    assert not store.renew_lease("relay", "a", first, 30)  # the deposed holder cannot extend it
    assert store.renew_lease("relay", "b", fence, 30)
    assert store.claim_lease("relay", "a", 30) is None


def test_a_released_lease_is_free_at_once(store: Store) -> None:
    fence = store.claim_lease("relay", "a", 60)
    store.release_lease("relay", "b", fence)  # not b's to release: nothing happens
    assert store.claim_lease("relay", "b", 60) is None
    store.release_lease("relay", "a", fence)
    assert store.claim_lease("relay", "b", 60) == fence + 1


def test_marks_of_a_deposed_relay_are_refused_and_leave_its_rows_unsent(store: Store) -> None:
    with store.transaction() as tx:
        for n in range(4):
            tx.add_event(event(n))
    seqs = [e.seq for e in store.unsent_events(10)]
    old = store.claim_lease("outbox-relay", "a", 0.2)
    assert store.mark_sent_fenced(seqs[:1], "outbox-relay", "a", old)
    wait_until(lambda: store.claim_lease("outbox-relay", "b", 30), 5, what="b takes the lease")
    assert not store.mark_sent_fenced(seqs[1:], "outbox-relay", "a", old)
    assert [e.seq for e in store.unsent_events(10)] == seqs[1:]  # b sends them again, in order
    assert store.mark_sent_fenced(seqs[1:], "outbox-relay", "b", old + 1)
    assert store.unsent_events(10) == []


def test_in_a_transaction_a_holder_can_check_that_its_lease_is_still_its_own(store: Store) -> None:
    fence = store.claim_lease("work:sub:1", "a", 60)
    with store.transaction() as tx:
        assert tx.holds_lease("work:sub:1", "a", fence)
        assert not tx.holds_lease("work:sub:1", "a", fence + 1)
        assert not tx.holds_lease("work:sub:1", "b", fence)
        assert not tx.holds_lease("work:sub:2", "a", fence)


def test_the_lease_object_renews_its_own_and_gives_up_a_lost_one(store: Store) -> None:
    a, b = Lease(store, "relay", "a", 0.3), Lease(store, "relay", "b", 0.3)
    assert a.acquire() and a.held and not b.acquire()
    for _ in range(5):  # renewed well before each expiry: b never gets it
        time.sleep(0.1)
        assert a.renew() and not b.acquire()
    wait_until(lambda: b.acquire(), 5, what="b takes the lease once a stops renewing")
    assert not a.renew() and not a.held
    assert b.fence == 2
    b.release()
    assert a.acquire() and a.fence == 3


def test_compare_and_set_sets_a_value_only_from_the_expected_one(store: Store) -> None:
    with store.transaction() as tx:
        assert tx.compare_and_set("k", None, "1")
        assert not tx.compare_and_set("k", None, "2")  # already there
        assert not tx.compare_and_set("k", "0", "2")
        assert tx.compare_and_set("k", "1", "2")
        assert tx.get_value("k") == "2"


def test_a_periodic_job_is_claimed_once_per_period(store: Store) -> None:
    assert claim_period(store, "sweep", 60, now=6000)
    assert not claim_period(store, "sweep", 60, now=6030)  # the same minute, another replica
    assert claim_period(store, "sweep", 60, now=6061)
    assert not claim_period(store, "sweep", 60, now=6000)  # an earlier period is never run again
    assert claim_period(store, "roll-forward", 60, now=6061)  # each job has its own periods


def _claim_at(locator: str, now: float, start: multiprocessing.synchronize.Event, out) -> None:
    store = open_store(locator)
    start.wait(30)
    out.put(claim_period(store, "sweep", 300, now=now))


def test_of_replicas_racing_for_a_period_exactly_one_runs_the_job(locator: str, store: Store) -> None:
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_claim_at, args=(locator, 9000.0 + n, start, out)) for n in range(4)]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert sorted(results) == [False, False, False, True]


def test_two_workers_running_the_same_clock_job_run_it_once_per_period(locator: str) -> None:
    from shared.events.worker import _run_jobs

    every, runs, stop = 0.5, [], threading.Event()

    def sweep() -> None:
        runs.append(int(time.time() // every))

    threads = [threading.Thread(target=_run_jobs, args=([(every, sweep)], stop, open_store(locator), "aftercare"))
               for _ in range(2)]
    for t in threads:
        t.start()
    wait_until(lambda: len(runs) >= 4, 30, what="the job run in four periods")
    stop.set()
    for t in threads:
        t.join(10)
    assert len(runs) == len(set(runs)), f"a period ran twice: {runs}"


def test_a_holder_taken_over_while_it_looked_away_learns_it_from_one_read(store: Store) -> None:
    a, b = Lease(store, "work:sub:1", "a", 30), Lease(store, "work:sub:1", "b", 30)
    assert a.acquire() and a.confirm()
    store.release_lease("work:sub:1", "a", a.fence)  # as if a had been paused past its expiry
    assert b.acquire()
    assert a.held and not a.confirm() and not a.held
    assert b.confirm()


def test_the_commit_watch_rings_when_outbox_rows_commit_and_not_for_a_rollback(locator: str) -> None:
    relay_side, writer = open_store(locator), open_store(locator)
    watch, stop = relay_side.commit_watch(0.005), threading.Event()
    watch.wait(stop, 0)  # listening from here on
    with pytest.raises(RuntimeError), writer.transaction() as tx:
        tx.add_event(event(1))
        raise RuntimeError("rolled back")
    assert not watch.wait(stop, 0.3)
    with writer.transaction() as tx:
        tx.add_event(event(2))
    assert watch.wait(stop, 30)
    assert [e.value for e in relay_side.unsent_events(10)] == ['{"n": 2}']


def _commit_one_event(path: str) -> None:
    with SQLiteStore(path).transaction() as tx:
        tx.add_event(event(3))


def test_an_idle_sqlite_commit_watch_sleeps_on_the_log_and_another_process_commit_wakes_it(tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    relay_side = SQLiteStore(path)
    checks = 0
    data_version = relay_side.data_version

    def counted() -> int:
        nonlocal checks
        checks += 1
        return data_version()

    relay_side.data_version = counted  # type: ignore[method-assign]
    watch, stop = relay_side.commit_watch(0.005), threading.Event()
    try:
        watch.wait(stop, 0)
        assert not watch.wait(stop, 1.0)
        # Polling every 5 ms would have checked about 200 times; the log's inotify bell, once a slice.
        assert checks <= 1 + 1.0 / SQLiteCommitWatch.BELL_SLICE_S + 2, checks
        writer = multiprocessing.get_context("spawn").Process(target=_commit_one_event, args=(path,))
        writer.start()
        assert watch.wait(stop, 60)
        writer.join(30)
        assert writer.exitcode == 0
        assert [e.value for e in relay_side.unsent_events(10)] == ['{"n": 3}']
    finally:
        watch.close()


def test_a_sqlite_commit_watch_sleeps_through_the_commits_of_another_services_database(tmp_path: Path) -> None:
    """The services' databases share a directory: one's commits must not wake the watches of the others."""
    mine, theirs = SQLiteStore(str(tmp_path / "careplan.db")), SQLiteStore(str(tmp_path / "encounters.db"))
    checks = 0
    data_version = mine.data_version

    def counted() -> int:
        nonlocal checks
        checks += 1
        return data_version()

    mine.data_version = counted  # type: ignore[method-assign]
    watch, stop = mine.commit_watch(0.005), threading.Event()
    busy = threading.Event()

    def commit_theirs() -> None:
        while not busy.is_set():
            with theirs.transaction() as tx:
                tx.add_event(event(4))

    writer = threading.Thread(target=commit_theirs, daemon=True)
    try:
        watch.wait(stop, 0)
        writer.start()
        assert not watch.wait(stop, 1.0)
        # Woken by every page written next door, it would have checked every 5 ms after each write.
        assert checks <= 1 + 1.0 / SQLiteCommitWatch.BELL_SLICE_S + 2, checks
        assert [e.value for e in theirs.unsent_events(1)] == ['{"n": 4}']  # the neighbour did commit meanwhile
        busy.set()
        writer.join(10)
        own = threading.Thread(target=_commit_one_event, args=(mine.path,))  # another connection to its own
        own.start()
        assert watch.wait(stop, 30)
        own.join(10)
    finally:
        busy.set()
        watch.close()


def test_a_sqlite_commit_watch_wakes_for_a_log_made_again_after_the_last_connection_closed(tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    relay_side = SQLiteStore(path)
    watch, stop = relay_side.commit_watch(0.005), threading.Event()
    try:
        watch.wait(stop, 0)
        relay_side._conn().close()  # the last connection: SQLite checkpoints and removes the log
        relay_side._local.conn = None
        assert not Path(path + "-wal").exists()
        assert not watch.wait(stop, 0.5)
        writer = multiprocessing.get_context("spawn").Process(target=_commit_one_event, args=(path,))
        writer.start()
        assert watch.wait(stop, 60)
        writer.join(30)
        assert writer.exitcode == 0
    finally:
        watch.close()
