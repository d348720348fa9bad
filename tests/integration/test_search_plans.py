"""Searches at scale, on both stores: every statement a search of the efficiency targets runs is answered through
an index (EXPLAIN), a bounded count stops at its bound, and a page read by key starts past it.

PostgreSQL's planner picks a sequential scan of a small table whatever its indexes, so its plans are shown with
`enable_seqscan` off: a statement that no index can answer keeps its `Seq Scan` and fails the test. SQLite's
planner has no statistics here (no ANALYZE), so its plan is the one it takes at any size. A page that no
selective criterion drives must come in the order of an index, without a sort of the whole type.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from shared.config import Settings
from shared.fhir.paging import NEXT, Cursor
from shared.fhir.query import COUNT_BOUND, Query, parse_query
from shared.fhir.registry import Registry
from shared.fhir.search import index_rows
from shared.fhir.store import SQLITE_BY_KEY, SQLiteStore, Store, open_store, search_statements
from shared.fhir.store_pg import pg_sql
from tests.support.engines import ENGINES, fresh_locator
from tests.support.examples import minimal

# The searches of the efficiency issue, as a client sends them: (service, type, query).
TARGETS = [("careplan", "CarePlan", "patient=Patient/p-7"),
           ("careplan", "Goal", "patient=Patient/p-7&lifecycle-status=active"),
           ("encounters", "Encounter", "patient=Patient/p-7&date=ge2026-01-01"),
           ("careplan", "CarePlan", "_lastUpdated=ge2026-01-01&_sort=_lastUpdated"),
           ("careplan", "CarePlan", "_lastUpdated=ge2026-01-01&_sort=-_lastUpdated"),
           ("careplan", "CarePlan", ""),
           ("careplan", "Goal", "identifier=https://example.org/goals|g-1")]


def registry(service: str) -> Registry:
    module = importlib.import_module(f"services.{service}.resources")
    return module.build_registry(Settings(service, database=":memory:"))


REGISTRIES = {s: registry(s) for s in ("careplan", "encounters")}


def parsed(service: str, rtype: str, query: str) -> Query:
    pairs = [tuple(p.split("=", 1)) for p in query.split("&") if p]
    reg = REGISTRIES[service]
    return parse_query(reg.get(rtype), pairs, strict=True, registry=reg)


@pytest.fixture(params=ENGINES)
def locator(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from fresh_locator(request.param, tmp_path, request, "plans")


@pytest.fixture
def store(locator: str) -> Iterator[Store]:
    opened = open_store(locator)
    yield opened
    opened.close()


def statements(store: Store, q: Query, rtype: str) -> list[tuple[str, list]]:
    """The count (accurate and bounded) and page statements of a search, the first page and one by key."""
    sqlite = isinstance(store, SQLiteStore)
    by_key = SQLITE_BY_KEY if sqlite else ""
    out: list[tuple[str, list]] = []
    seeks = [None] if q.keyset is None else [None, Cursor(q.keyset, NEXT, (1,) if q.keyset == "created"
                                                          else ("2026-03-01T00:00:00.000Z", 1))]
    for total in (True, COUNT_BOUND):
        for cursor in seeks:
            counting, page = search_statements(rtype, q.where, cursor.sql_order() if cursor else q.order, 51, 0,
                                               total, cursor.seek() if cursor else None, by_key)
            out += [counting, page]  # type: ignore[list-item]
    return out


def plans(store: Store, locator: str, sql: str, args: list) -> list[str]:
    if isinstance(store, SQLiteStore):
        return [row["detail"] for row in store._conn().execute("EXPLAIN QUERY PLAN " + sql, args)]
    with psycopg.connect(locator, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        return [row[0] for row in conn.execute("EXPLAIN " + pg_sql(sql), args)]


def full_scans(lines: list[str], sqlite: bool) -> list[str]:
    if sqlite:  # SCAN r / SCAN s without USING: a walk of the whole table
        return [line for line in lines if line.split()[:1] == ["SCAN"] and line.split()[1] in ("r", "s", "h")
                and "USING" not in line]
    return [line for line in lines if "Seq Scan" in line]


@pytest.mark.parametrize(("service", "rtype", "query"), TARGETS, ids=[f"{t}?{q}" for _, t, q in TARGETS])
def test_every_statement_of_a_target_search_is_answered_through_an_index(
        store: Store, locator: str, service: str, rtype: str, query: str) -> None:
    sqlite = isinstance(store, SQLiteStore)
    q = parsed(service, rtype, query)
    shown = []
    for sql, args in statements(store, q, rtype):
        lines = plans(store, locator, sql, args)
        shown.append("\n".join([sql, *lines]))
        assert not full_scans(lines, sqlite), "\n\n".join(shown)
        if sqlite and "patient=" in query:  # the patient's ids first, then each row by its primary key
            assert any("sqlite_autoindex_resource_1 (type=? AND id=?)" in line for line in lines), shown[-1]
            assert any("search_by_value (type=? AND param=? AND value=?)" in line for line in lines), shown[-1]
        if "patient=" not in query and "identifier=" not in query and sql.startswith("SELECT r.*"):
            # No criterion names a few resources: the page walks an index in the search's order and stops at
            # its end, rather than reading and sorting every resource of the type.
            sort = "TEMP B-TREE" if sqlite else "Sort"
            assert not any(sort in line for line in lines), shown[-1]
    print("\n\n".join(shown))


def load(store: Store, service: str, rtype: str, n: int, patient: str = "p-1") -> list[str]:
    rdef = REGISTRIES[service].get(rtype)
    ids = [f"{rtype.lower()}-{k}" for k in range(n)]
    with store.transaction() as tx:
        for rid in ids:
            resource = {**minimal(rtype, patient), "id": rid}
            tx.write(rtype, rid, resource, index_rows(resource, rdef.params))
    return ids


def test_a_bounded_count_stops_past_its_bound_and_an_accurate_one_counts_all(store: Store) -> None:
    load(store, "careplan", "CarePlan", 7)
    where = parsed("careplan", "CarePlan", "patient=Patient/p-1").where

    assert store.search("CarePlan", where, "r.created_seq", 2, 0, total=3).total == 4  # past the bound: 3 + 1
    assert store.search("CarePlan", where, "r.created_seq", 2, 0, total=10).total == 7
    assert store.search("CarePlan", where, "r.created_seq", 2, 0, total=True).total == 7
    assert store.search("CarePlan", where, "r.created_seq", 2, 0, total=False).total is None


def test_a_page_read_by_key_starts_past_the_key_in_either_direction(store: Store) -> None:
    ids = load(store, "careplan", "CarePlan", 6)
    q = parsed("careplan", "CarePlan", "patient=Patient/p-1")
    first = store.search("CarePlan", q.where, q.order, 2, 0, total=False).items
    assert [s.id for s in first] == ids[:2] and all(s.created_seq for s in first)

    after = Cursor("created", NEXT, (first[-1].created_seq,))
    page = store.search("CarePlan", q.where, after.sql_order(), 2, 0, total=True, seek=after.seek())
    assert [s.id for s in page.items] == ids[2:4]
    assert page.total == 6  # the count is of the search, not of what lies past the key

    before = Cursor("created", "p", (page.items[0].created_seq,))
    back = store.search("CarePlan", q.where, before.sql_order(), 5, 0, total=False, seek=before.seek()).items
    assert [s.id for s in back] == list(reversed(ids[:2]))  # read backwards: the caller turns them round
