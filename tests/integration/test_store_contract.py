"""The contract every Store adapter keeps (shared/fhir/store.py): one suite, run against each adapter.

Each Adapter says how to open a store from a locator string (a file path, a postgresql:// URL) and where one
test's store lives: a new SQLite file, or a new database on the session's throwaway PostgreSQL server. Each test
gets an empty store; the concurrency tests open the same store from several threads and processes.
"""
from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from shared.fhir.compartment import stream
from shared.fhir.interactions import FhirApi
from shared.fhir.migrations import MIGRATIONS, Migration, migrate_postgresql, migrate_sqlite
from shared.fhir.outcome import FhirError
from shared.fhir.registry import Registry, ResourceDef
from shared.fhir.search import (
    SearchParam,
    chain_condition,
    has_condition,
    reference_condition,
    reference_in,
    token_condition,
)
from shared.fhir.store import IndexRow, OutboxEvent, SQLiteStore, Store
from shared.fhir.store_pg import PostgresStore

PLAN = "CarePlan"


@dataclass(frozen=True)
class Adapter:
    name: str
    open: Callable[[str], Store]       # module-level, so that a child process can open the same store
    locator: Callable[[Path], str] | None = None  # where the store of one test lives; None: a new PG database

    def __str__(self) -> str:
        return self.name


ADAPTERS = [Adapter("sqlite", SQLiteStore, lambda tmp: str(tmp / "store.db")),
            Adapter("postgresql", PostgresStore)]


@pytest.fixture(params=ADAPTERS, ids=str)
def adapter(request: pytest.FixtureRequest) -> Adapter:
    return request.param


@pytest.fixture
def locator(adapter: Adapter, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    if adapter.locator is not None:
        yield adapter.locator(tmp_path)
        return
    server = request.getfixturevalue("pg_server")
    url = server.create_database("contract")
    yield url
    server.drop_database(url)


@pytest.fixture
def store(adapter: Adapter, locator: str) -> Iterator[Store]:
    opened = adapter.open(locator)
    yield opened
    getattr(opened, "close", lambda: None)()


def plan(status: str = "draft", **extra: object) -> dict:
    return {"resourceType": PLAN, "status": status, "intent": "plan",
            "subject": {"reference": "Patient/alice"}, **extra}


def status_index(status: str) -> list[IndexRow]:
    return [IndexRow("status", None, status), IndexRow("patient", None, "Patient/alice")]


def write(store: Store, rid: str, resource: dict, index: list[IndexRow] | None = None,
          expected_version: int | None = None) -> object:
    with store.transaction() as tx:
        return tx.write(PLAN, rid, resource, index if index is not None else status_index(resource["status"]),
                        expected_version)


def event(n: int) -> OutboxEvent:
    return OutboxEvent("iop.careplan.events", "alice", [("ce_id", f"evt-{n}"), ("ce_type", "iop.careplan.created")],
                       f'{{"n": {n}}}')


# -- versions ------------------------------------------------------------------------------------


def test_each_write_is_a_new_version_with_server_meta(store: Store) -> None:
    first = write(store, "p1", plan("draft", meta={"versionId": "9", "tag": [{"code": "x"}]}))
    second = write(store, "p1", plan("active"))

    assert (first.version, second.version) == (1, 2)
    assert first.resource["meta"]["versionId"] == "1"
    assert first.resource["meta"]["tag"] == [{"code": "x"}]
    assert second.resource["meta"] == {"versionId": "2", "lastUpdated": second.last_updated}
    assert second.last_updated >= first.last_updated
    assert first.etag == 'W/"1"'
    current = store.read(PLAN, "p1")
    assert (current.version, current.resource["status"], current.deleted) == (2, "active", False)
    assert store.vread(PLAN, "p1", 1).resource == first.resource
    assert store.vread(PLAN, "p1", 2).resource == second.resource
    assert store.vread(PLAN, "p1", 3) is None
    assert store.read(PLAN, "p2") is None


def test_a_write_expecting_another_version_is_refused(store: Store) -> None:
    write(store, "p1", plan())

    for expected in (0, 2):
        with pytest.raises(FhirError) as refused:
            write(store, "p1", plan("active"), expected_version=expected)
        assert refused.value.status == 412
    assert write(store, "p1", plan("active"), expected_version=1).version == 2
    assert write(store, "p2", plan(), expected_version=0).version == 1
    assert store.history(PLAN, "p1", None, 10, 0).total == 2


# -- history -------------------------------------------------------------------------------------


def test_history_lists_versions_newest_first_with_their_methods(store: Store) -> None:
    write(store, "p1", plan("draft"))
    write(store, "p2", plan("draft"))
    write(store, "p1", plan("active"))
    with store.transaction() as tx:
        tx.delete(PLAN, "p2")

    instance = store.history(PLAN, "p1", None, 10, 0)
    every = store.history(PLAN, None, None, 10, 0)
    system = store.history(None, None, None, 10, 0)

    assert [(s.version, s.method) for s in instance.items] == [(2, "PUT"), (1, "POST")]
    assert [(s.id, s.version, s.method, s.deleted) for s in every.items] == [
        ("p2", 2, "DELETE", True), ("p1", 2, "PUT", False), ("p2", 1, "POST", False), ("p1", 1, "POST", False)]
    assert every.total == system.total == 4
    paged = [store.history(PLAN, None, None, 3, offset) for offset in (0, 3)]
    assert [(s.id, s.version) for p in paged for s in p.items] == [(s.id, s.version) for s in every.items]
    assert all(p.total == 4 for p in paged)
    since = every.items[1].last_updated
    assert {(s.id, s.version) for s in store.history(PLAN, None, since, 10, 0).items} >= {("p2", 2), ("p1", 2)}
    assert store.history("Goal", None, None, 10, 0).total == 0


# -- soft delete ---------------------------------------------------------------------------------


def test_delete_keeps_the_history_and_hides_the_resource(store: Store) -> None:
    created = write(store, "p1", plan())

    with store.transaction() as tx:
        deleted = tx.delete(PLAN, "p1")
        again = tx.delete(PLAN, "p1")
        nothing = tx.delete(PLAN, "never-was")

    assert (deleted.version, deleted.deleted, deleted.method) == (2, True, "DELETE")
    assert again.version == 2 and again.deleted  # deleting a deleted resource adds no version
    assert nothing is None
    assert store.read(PLAN, "p1").deleted
    assert store.vread(PLAN, "p1", 1).resource == created.resource
    assert store.vread(PLAN, "p1", 2).deleted
    assert store.search(PLAN, [], "r.created_seq", 10, 0).total == 0
    with store.transaction() as tx:
        assert tx.find_ids(PLAN, "status", None, "draft") == []
    revived = write(store, "p1", plan("active"))
    assert (revived.version, revived.deleted) == (3, False)
    assert store.search(PLAN, [], "r.created_seq", 10, 0).total == 1


# -- search index --------------------------------------------------------------------------------


def test_an_update_replaces_the_search_index_rows(store: Store) -> None:
    write(store, "p1", plan("draft"))
    write(store, "p2", plan("draft"))
    write(store, "p1", plan("active"))

    with store.transaction() as tx:
        drafts = tx.find_ids(PLAN, "status", None, "draft")
        actives = tx.find_ids(PLAN, "status", None, "active")
        for_alice = sorted(tx.find_ids(PLAN, "patient", None, "Patient/alice"))

    assert (drafts, actives, for_alice) == (["p2"], ["p1"], ["p1", "p2"])
    page = store.search(PLAN, [token_condition("status", "active")], "r.created_seq", 10, 0)
    assert (page.total, [s.id for s in page.items]) == (1, ["p1"])
    assert page.items[0].version == 2


def test_index_rows_keep_system_and_dates(store: Store) -> None:
    rows = [IndexRow("identifier", "https://partner.example/mrn", "42"),
            IndexRow("date", date_lo="2025-03-01T00:00:00.000Z", date_hi="2025-03-01T23:59:59.999Z")]
    write(store, "p1", plan(), rows)

    with store.transaction() as tx:
        assert tx.find_ids(PLAN, "identifier", "https://partner.example/mrn", "42") == ["p1"]
        assert tx.find_ids(PLAN, "identifier", "https://other.example/mrn", "42") == []
        assert tx.find_ids(PLAN, "identifier", None, "42") == ["p1"]
    in_march = ("EXISTS (SELECT 1 FROM search_index s WHERE s.type=r.type AND s.id=r.id AND s.param='date' "
                "AND s.date_lo>=? AND s.date_hi<=?)", ["2025-03-01T00:00:00.000Z", "2025-03-31T23:59:59.999Z"])
    assert store.search(PLAN, [in_march], "r.created_seq", 10, 0).total == 1


def test_search_pages_in_the_requested_order(store: Store) -> None:
    for n in range(5):
        write(store, f"p{n}", plan())

    first, rest = (store.search(PLAN, [], "r.created_seq ASC", 3, offset) for offset in (0, 3))
    newest = store.search(PLAN, [], "r.created_seq DESC", 2, 0)

    assert [s.id for s in first.items + rest.items] == [f"p{n}" for n in range(5)]
    assert first.total == rest.total == 5
    assert [s.id for s in newest.items] == ["p4", "p3"]


def test_a_search_asked_not_to_count_leaves_the_total_out(store: Store) -> None:
    for n in range(3):
        write(store, f"p{n}", plan())

    page = store.search(PLAN, [], "r.created_seq", 2, 0, total=False)

    assert page.total is None and [s.id for s in page.items] == ["p0", "p1"]


def test_keyset_pages_stream_every_resource_in_id_order(store: Store) -> None:
    for n in (3, 1, 4, 0, 2):
        write(store, f"p{n}", plan())

    streamed = [s.id for s in stream(store, PLAN, [], page=2)]

    assert streamed == [f"p{n}" for n in range(5)]


def test_the_fragments_of_chains_has_and_includes_run_on_the_store(store: Store) -> None:
    """The SQL that chaining, `_has` and `_revinclude` add to a search (shared/fhir/search.py): a subquery over
    resource aliased `r` inside a search over `r`, `||` concatenation and a flat IN list."""
    with store.transaction() as tx:
        tx.write("Goal", "g1", {"resourceType": "Goal", "lifecycleStatus": "active"},
                 [IndexRow("lifecycle-status", None, "active")])
        tx.write("Goal", "g2", {"resourceType": "Goal", "lifecycleStatus": "completed"},
                 [IndexRow("lifecycle-status", None, "completed")])
    write(store, "p1", plan(), [IndexRow("goal", None, "Goal/g1")])
    write(store, "p2", plan(), [IndexRow("goal", None, "Goal/g2")])
    active = [token_condition("lifecycle-status", "active")]

    chained = store.search(PLAN, [chain_condition("goal", [("Goal", active)])], "r.id", 10, 0)
    has = store.search("Goal", [has_condition(PLAN, "goal", [("r.id IN (?)", ["p2"])])], "r.id", 10, 0)
    referring = store.search(PLAN, [reference_in("goal", ["Goal/g1", "Goal/g2", "Goal/none"])], "r.id", 10, 0)

    assert [s.id for s in chained.items] == ["p1"]
    assert [s.id for s in has.items] == ["g2"]
    assert [s.id for s in referring.items] == ["p1", "p2"]


# -- one transaction: all or nothing -------------------------------------------------------------


def test_a_failed_transaction_leaves_nothing_behind(store: Store) -> None:
    class Refused(Exception):
        pass

    with pytest.raises(Refused), store.transaction() as tx:
        tx.write(PLAN, "p1", plan(), status_index("draft"))
        tx.add_event(event(1))
        assert tx.mark_applied("careplan-worker", "evt-0")
        tx.remember("bundle", "sub-1", {"status": 200})
        tx.put_value("lag:careplan:iop.intake.events", "3")
        tx.enqueue("sub:ehr-1", {"kind": "handshake"})
        raise Refused

    assert store.read(PLAN, "p1") is None
    assert store.history(None, None, None, 10, 0).total == 0
    assert store.unsent_events(10) == []
    assert store.get_value("lag:careplan:iop.intake.events") is None
    assert store.work("sub:ehr-1", ("queued",), 10) == []
    with store.transaction() as tx:
        assert tx.find_ids(PLAN, "status", None, "draft") == []
        assert tx.recall("bundle", "sub-1") is None
        assert tx.mark_applied("careplan-worker", "evt-0")  # it was never recorded


def test_a_failed_savepoint_undoes_only_its_own_writes(store: Store) -> None:
    class Refused(Exception):
        pass

    with store.transaction() as tx:
        with tx.savepoint():
            tx.write(PLAN, "kept", plan(), status_index("draft"))
            assert tx.mark_applied("careplan-worker", "evt-kept")
        with pytest.raises(Refused), tx.savepoint():
            tx.write(PLAN, "undone", plan(), status_index("draft"))
            tx.add_event(event(1))
            assert tx.mark_applied("careplan-worker", "evt-undone")
            raise Refused
        with tx.savepoint():
            tx.add_event(event(2))

    assert store.read(PLAN, "kept").version == 1
    assert store.read(PLAN, "undone") is None
    assert [e.headers for e in store.unsent_events(10)] == [event(2).headers]
    with store.transaction() as tx:
        assert not tx.mark_applied("careplan-worker", "evt-kept")
        assert tx.mark_applied("careplan-worker", "evt-undone")  # its savepoint was rolled back


def test_a_failed_update_keeps_the_previous_version_and_index(store: Store) -> None:
    write(store, "p1", plan("draft"))

    with pytest.raises(FhirError), store.transaction() as tx:
        tx.write(PLAN, "p1", plan("active"), status_index("active"))
        tx.add_event(event(1))
        tx.write(PLAN, "p1", plan("revoked"), status_index("revoked"), expected_version=1)  # stale: 412

    assert store.read(PLAN, "p1").version == 1
    assert store.unsent_events(10) == []
    with store.transaction() as tx:
        assert tx.find_ids(PLAN, "status", None, "draft") == ["p1"]
        assert tx.find_ids(PLAN, "status", None, "active") == []


# -- consumers, idempotency, outbox, values ------------------------------------------------------


def test_mark_applied_is_true_once_per_consumer_and_event(store: Store) -> None:
    with store.transaction() as tx:
        first = tx.mark_applied("careplan-worker", "evt-1")
        duplicate = tx.mark_applied("careplan-worker", "evt-1")
        other_consumer = tx.mark_applied("aftercare-worker", "evt-1")
    with store.transaction() as tx:
        redelivered = tx.mark_applied("careplan-worker", "evt-1")

    assert (first, duplicate, other_consumer, redelivered) == (True, False, True, False)


def test_remember_and_recall_by_scope_and_key(store: Store) -> None:
    answer = {"status": 200, "body": {"resourceType": "Bundle", "type": "transaction-response"},
              "headers": {"ETag": 'W/"1"'}}
    with store.transaction() as tx:
        assert tx.recall("bundle", "partner|sub-1") is None
        tx.remember("bundle", "partner|sub-1", answer)

    with store.transaction() as tx:
        assert tx.recall("bundle", "partner|sub-1") == answer
        assert tx.recall("create:Patient", "partner|sub-1") is None
        assert tx.recall("bundle", "partner|sub-2") is None


def test_unsent_events_come_in_commit_order_until_marked_sent(store: Store) -> None:
    with store.transaction() as tx:
        tx.add_event(event(1))
        tx.add_event(event(2))
    with store.transaction() as tx:
        tx.add_event(event(3))

    unsent = store.unsent_events(10)
    assert [e.value for e in unsent] == ['{"n": 1}', '{"n": 2}', '{"n": 3}']
    assert unsent[0].headers == [("ce_id", "evt-1"), ("ce_type", "iop.careplan.created")]
    assert (unsent[0].topic, unsent[0].key) == ("iop.careplan.events", "alice")
    assert [e.seq for e in unsent] == sorted(e.seq for e in unsent)
    assert [e.value for e in store.unsent_events(2)] == ['{"n": 1}', '{"n": 2}']

    store.mark_sent([unsent[0].seq, unsent[1].seq])
    store.mark_sent([])

    assert [e.value for e in store.unsent_events(10)] == ['{"n": 3}']
    store.mark_sent([unsent[2].seq])
    assert store.unsent_events(10) == []


def test_named_values_and_data_version(store: Store, adapter: Adapter, locator: str) -> None:
    with store.transaction() as tx:
        tx.put_value("lag:careplan-worker:iop.intake.events", "3")
        tx.put_value("lag:careplan-worker:iop.encounter.events", "0")
        tx.put_value("relay:position", "17")
        tx.put_value("relay:position", "18")
        assert tx.get_value("relay:position") == "18"  # a transaction reads its own writes
        assert [n for n, _ in tx.values_with_prefix("relay:")] == ["relay:position"]

    assert store.get_value("relay:position") == "18"
    assert store.get_value("nothing") is None
    assert sorted(store.values_with_prefix("lag:")) == [("lag:careplan-worker:iop.encounter.events", "0"),
                                                        ("lag:careplan-worker:iop.intake.events", "3")]
    store.ping()
    before = store.data_version()
    other = adapter.open(locator)
    write(other, "p1", plan())
    assert store.data_version() != before  # another connection committed
    getattr(other, "close", lambda: None)()


# -- work queues (one FIFO per subscriber) -------------------------------------------------------


def test_a_work_queue_is_first_in_first_out_per_queue(store: Store) -> None:
    with store.transaction() as tx:
        first = tx.enqueue("sub:ehr-1", {"kind": "handshake"})
        other = tx.enqueue("sub:ehr-2", {"kind": "handshake"})
        second = tx.enqueue("sub:ehr-1", {"kind": "event", "ce_id": "evt-1"})
        held = tx.enqueue("sub:ehr-1", {"kind": "event", "ce_id": "evt-2"}, status="blocked-consent")

    queued = store.work("sub:ehr-1", ("queued",), 10)

    assert first < other < second < held
    assert [(w.seq, w.body) for w in queued] == [(first, {"kind": "handshake"}),
                                                 (second, {"kind": "event", "ce_id": "evt-1"})]
    assert {(w.queue, w.status, w.attempts, w.number) for w in queued} == {("sub:ehr-1", "queued", 0, None)}
    assert [w.seq for w in store.work("sub:ehr-1", ("queued", "blocked-consent"), 10)] == [first, second, held]
    assert [w.seq for w in store.work("sub:ehr-1", ("queued",), 1)] == [first]
    assert [w.seq for w in store.work("sub:ehr-2", ("queued",), 10)] == [other]


def test_work_items_are_updated_numbered_and_due(store: Store) -> None:
    with store.transaction() as tx:
        first = tx.enqueue("sub:ehr-1", {"kind": "event"})
        second = tx.enqueue("sub:ehr-1", {"kind": "event"})
        later = tx.enqueue("sub:ehr-2", {"kind": "event"})
    with store.transaction() as tx:
        tx.update_work(first, "delivered", 1, "2025-03-04T10:00:00.000Z", number=1)
        tx.update_work(second, "delivered", 2, "2025-03-04T10:00:05.000Z", number=2)
        tx.update_work(second, "queued", 3, "2025-03-04T10:00:09.000Z")  # a resend keeps its number
        tx.update_work(later, "queued", 1, "2999-01-01T00:00:00.000Z")

    delivered = store.work("sub:ehr-1", ("delivered",), 10)
    resent = store.work("sub:ehr-1", ("queued",), 10)

    assert [(w.seq, w.attempts, w.number) for w in delivered] == [(first, 1, 1)]
    assert [(w.seq, w.attempts, w.number, w.not_before) for w in resent] == [
        (second, 3, 2, "2025-03-04T10:00:09.000Z")]
    assert [w.seq for w in store.work("sub:ehr-1", ("delivered", "queued"), 10, number_range=(2, 5))] == [second]
    assert store.queues_due("queued", "2025-03-05T00:00:00.000Z") == ["sub:ehr-1"]  # ehr-2 waits until 2999
    assert store.queues_due("queued", "2025-03-04T10:00:08.000Z") == []
    assert store.queues_due("delivered", "2025-03-05T00:00:00.000Z") == ["sub:ehr-1"]


# -- concurrent writers --------------------------------------------------------------------------

WRITES_PER_WRITER = 100


def revise_attendance(store: Store, writes: int, rid: str = "shared") -> None:
    """Read-modify-write one CarePlan `writes` times, counting sessions in it; each write must see the last."""
    for _ in range(writes):
        with store.transaction() as tx:
            current = tx.read(PLAN, rid)
            sessions = int(current.resource["note"][0]["text"]) if current else 0
            tx.write(PLAN, rid, plan(note=[{"text": str(sessions + 1)}]), status_index("draft"),
                     expected_version=current.version if current else 0)


def _child_writer(open_store: Callable[[str], Store], locator: str, writes: int, start: Any) -> None:
    store = open_store(locator)
    start.wait(30)  # every writer begins together, so their transactions interleave
    revise_attendance(store, writes)
    getattr(store, "close", lambda: None)()


def assert_no_lost_update(store: Store, writes: int) -> None:
    final = store.read(PLAN, "shared")
    assert final.version == writes
    assert final.resource["note"][0]["text"] == str(writes)
    history = store.history(PLAN, "shared", None, writes + 10, 0)
    assert [s.version for s in history.items] == list(range(writes, 0, -1))
    assert [s.resource["note"][0]["text"] for s in history.items] == [str(v) for v in range(writes, 0, -1)]


def test_two_threads_writing_one_resource_lose_no_update(store: Store, adapter: Adapter, locator: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def writer(use: Store) -> None:
        try:
            start.wait(10)
            revise_attendance(use, WRITES_PER_WRITER)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    other = adapter.open(locator)  # one thread shares the fixture's store object, one has its own
    threads = [threading.Thread(target=writer, args=(s,)) for s in (store, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert errors == []
    assert_no_lost_update(store, 2 * WRITES_PER_WRITER)
    getattr(other, "close", lambda: None)()


def test_two_processes_writing_one_resource_lose_no_update(store: Store, adapter: Adapter, locator: str) -> None:
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(3)
    children = [spawn.Process(target=_child_writer, args=(adapter.open, locator, WRITES_PER_WRITER, start))
                for _ in range(2)]
    for child in children:
        child.start()
    start.wait(30)
    revise_attendance(store, WRITES_PER_WRITER)  # and this process writes too, meanwhile
    for child in children:
        child.join(60)

    assert [c.exitcode for c in children] == [0, 0]
    assert_no_lost_update(store, 3 * WRITES_PER_WRITER)


def run_together(*jobs: Callable[[], object]) -> list[object]:
    """Run each job in its own thread, all released at once; what each returned or raised, in order."""
    start, results = threading.Barrier(len(jobs)), [None] * len(jobs)

    def run(i: int, job: Callable[[], object]) -> None:
        start.wait(10)
        try:
            results[i] = job()
        except BaseException as exc:  # noqa: BLE001 - returned to the test, which asserts on it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_two_concurrent_if_match_updates_one_wins_the_other_is_412(store: Store, adapter: Adapter,
                                                                     locator: str) -> None:
    other = adapter.open(locator)
    for round_ in range(10):
        rid = f"p{round_}"
        write(store, rid, plan())
        results = run_together(lambda rid=rid: write(store, rid, plan("active"), expected_version=1),
                               lambda rid=rid: write(other, rid, plan("revoked"), expected_version=1))

        refused = [r for r in results if isinstance(r, FhirError)]
        won = [r for r in results if not isinstance(r, BaseException)]
        assert len(won) == 1 and [r.status for r in refused] == [412], results
        current = store.read(PLAN, rid)
        assert (current.version, current.resource["status"]) == (2, won[0].resource["status"])
    getattr(other, "close", lambda: None)()


def test_two_concurrent_conditional_creates_make_one_resource(store: Store, adapter: Adapter, locator: str) -> None:
    registry = Registry("intake")
    registry.add(ResourceDef("Patient", params=[SearchParam("identifier", "token", "identifier", "an identifier")]))
    other = adapter.open(locator)
    apis = [FhirApi(s, registry, "http://127.0.0.1:8081/fhir") for s in (store, other)]

    def create(api: FhirApi, n: int) -> int:
        with api.store.transaction() as tx:
            patient = {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": f"mrn-{n}"}]}
            return api.create(tx, patient, if_none_exist=f"identifier=urn:mrn|mrn-{n}").status

    for n in range(10):
        statuses = run_together(lambda n=n: create(apis[0], n), lambda n=n: create(apis[1], n))
        assert sorted(statuses) == [200, 201], statuses
        with store.transaction() as tx:
            assert len(tx.find_ids("Patient", "identifier", "urn:mrn", f"mrn-{n}")) == 1
    assert store.search("Patient", [], "r.created_seq", 100, 0).total == 10
    getattr(other, "close", lambda: None)()


def test_two_consumers_applying_one_event_have_one_effect(store: Store, adapter: Adapter, locator: str) -> None:
    """As ConsumerRunner.apply does: the dedupe mark and the effect in one transaction, by two replicas at once."""
    other = adapter.open(locator)

    def apply(use: Store, ce_id: str, held: threading.Event | None) -> bool:
        with use.transaction() as tx:
            if not tx.mark_applied("careplan-worker", ce_id):
                return False
            if held is not None:
                held.wait(0.2)  # keep the transaction open while the other replica tries the same event
            current = tx.read(PLAN, "effects")
            notes = current.resource["note"] if current else []
            tx.write(PLAN, "effects", plan(note=[*notes, {"text": ce_id}]), status_index("draft"))
        return True

    for n in range(10):
        ce_id = f"evt-{n}"
        results = run_together(lambda c=ce_id: apply(store, c, threading.Event()),
                               lambda c=ce_id: apply(other, c, None))
        assert sorted(results) == [False, True], results
    texts = [note["text"] for note in store.read(PLAN, "effects").resource["note"]]
    assert texts == [f"evt-{n}" for n in range(10)]
    getattr(other, "close", lambda: None)()


def test_concurrent_writers_number_versions_without_gaps_or_repeats(store: Store, adapter: Adapter,
                                                                   locator: str) -> None:
    """Four writers, each with its own store object, blind-writing three shared resources in different orders."""
    stores = [store, *(adapter.open(locator) for _ in range(3))]
    rounds = 15

    def writer(use: Store, w: int) -> None:
        for n in range(rounds):
            rid = f"p{(w + n) % 3}"
            with use.transaction() as tx:
                tx.write(PLAN, rid, plan(note=[{"text": f"{w}:{n}"}]), status_index("draft"))

    results = run_together(*(lambda s=s, w=w: writer(s, w) for w, s in enumerate(stores)))

    assert results == [None] * len(stores)
    every = store.history(PLAN, None, None, 1000, 0)
    assert every.total == 4 * rounds
    for rid in ("p0", "p1", "p2"):
        versions = sorted(s.version for s in every.items if s.id == rid)
        assert versions == list(range(1, len(versions) + 1))
        assert store.read(PLAN, rid).version == len(versions)
    assert sorted(s.resource["note"][0]["text"] for s in every.items) == sorted(
        f"{w}:{n}" for w in range(4) for n in range(rounds))
    for extra in stores[1:]:
        getattr(extra, "close", lambda: None)()


def test_a_bare_id_reference_matches_any_type_with_that_exact_id(store: Store) -> None:
    write(store, "p1", plan(), [IndexRow("subject", None, "Patient/Ab1")])
    write(store, "p2", plan(), [IndexRow("subject", None, "Group/ab1")])
    write(store, "p3", plan(), [IndexRow("subject", None, "Patient/xAb1")])

    def found(raw: str) -> list[str]:
        return [s.id for s in store.search(PLAN, [reference_condition("subject", raw, None)], "r.id", 10, 0).items]

    assert found("Ab1") == ["p1"]
    assert found("ab1") == ["p2"]
    assert found("b1") == []
    assert found("Ab1,ab1") == ["p1", "p2"]


# -- schema migrations ---------------------------------------------------------------------------

NEXT_TABLE = "CREATE TABLE next_release (n INTEGER PRIMARY KEY)"
NEXT = Migration(MIGRATIONS[-1].version + 1, "a table of the next release", NEXT_TABLE, NEXT_TABLE)


def migrate_with(adapter: Adapter, locator: str, migrations: list[Migration]) -> list[int]:
    """Run the adapter's migrator on a connection of its own, as a replica starting up does."""
    if adapter.name == "sqlite":
        conn = sqlite3.connect(locator, timeout=30, isolation_level=None)
        try:
            return migrate_sqlite(conn, migrations)
        finally:
            conn.close()
    with psycopg.connect(locator, autocommit=True, row_factory=dict_row) as conn:
        return migrate_postgresql(conn, migrations)


def test_migrations_apply_once_in_order_even_when_two_replicas_start_at_once(store: Store, adapter: Adapter,
                                                                            locator: str) -> None:
    store.ping()  # the store migrated itself when opened
    assert migrate_with(adapter, locator, MIGRATIONS) == []  # nothing left to apply: idempotent

    results = run_together(*(lambda: migrate_with(adapter, locator, [*MIGRATIONS, NEXT]) for _ in range(3)))

    assert sorted(results, key=len) == [[], [], [NEXT.version]], results
    assert migrate_with(adapter, locator, [*MIGRATIONS, NEXT]) == []
    reopened = adapter.open(locator)  # a store of the older release still opens the database
    assert write(reopened, "p1", plan()).version == 1
    getattr(reopened, "close", lambda: None)()
    with pytest.raises(ValueError):
        migrate_with(adapter, locator, [NEXT, *MIGRATIONS])  # out of order: refused before anything runs
