"""Versioned FHIR resource store: the narrow interface and its SQLite implementation.

One transaction covers resource writes, their search index rows, outbox events, the
`ce_id`s a consumer has applied and idempotency records, so that a resource change and the
events it causes commit together (transactional outbox) and a consumer's effect and its
dedupe mark commit together (exactly-once effect). The PostgreSQL adapter (shared/fhir/store_pg.py)
implements the same two classes and passes the same contract tests (tests/integration/test_store_contract.py);
`open_store` picks one from a locator: a `postgresql://` URL, or else a SQLite file path. Both create and
migrate their schema themselves (shared/fhir/migrations.py).
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from shared.config import SQLITE_SYNCHRONOUS, sqlite_synchronous
from shared.fhir.migrations import migrate_sqlite
from shared.fhir.outcome import FhirError, Issue
from shared.fhir.util import compact_json, now_instant

PG_SCHEMES = ("postgresql://", "postgres://")


class StoreUnavailable(FhirError):
    """The store cannot be reached or did not answer in time: 503 with Retry-After, a transient failure.

    A request may be sent again; a consumer retries the same records without dead-lettering them.
    """

    def __init__(self, reason: str, retry_after_s: int = 1) -> None:
        super().__init__(503, [Issue(f"the store is unavailable ({reason}); the request was not applied, "
                                     "try again", code="transient")], {"Retry-After": str(retry_after_s)})
        self.reason = reason


@dataclass(frozen=True)
class Stored:
    """One version of a resource as the store holds it."""

    type: str
    id: str
    version: int
    last_updated: str
    deleted: bool
    resource: dict[str, Any]
    method: str = "PUT"
    # Of a current version read by a search, the key of keyset paging; not part of what a version is.
    created_seq: int | None = field(default=None, compare=False)

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'


@dataclass(frozen=True)
class IndexRow:
    param: str
    system: str | None = None
    value: str | None = None
    date_lo: str | None = None
    date_hi: str | None = None


@dataclass(frozen=True)
class OutboxEvent:
    topic: str
    key: str
    headers: list[tuple[str, str]]
    value: str
    seq: int = 0


@dataclass(frozen=True)
class WorkItem:
    """One item of a named FIFO work queue (e.g. the notifications owed to one subscriber)."""

    seq: int
    queue: str
    status: str
    attempts: int
    not_before: str
    number: int | None
    body: dict[str, Any]
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class Page:
    total: int | None  # None when the search was asked not to count (total=False)
    items: list[Stored]


class Transaction(Protocol):
    def savepoint(self) -> AbstractContextManager[None]: ...
    def lock(self, name: str) -> None: ...
    def read(self, rtype: str, rid: str) -> Stored | None: ...
    def write(self, rtype: str, rid: str, resource: dict, index: list[IndexRow],
              expected_version: int | None = None) -> Stored: ...
    def delete(self, rtype: str, rid: str) -> Stored | None: ...
    def write_index(self, rtype: str, rid: str, index: list[IndexRow]) -> None: ...
    def add_event(self, event: OutboxEvent) -> None: ...
    def mark_applied(self, consumer: str, ce_id: str) -> bool: ...
    def remember(self, scope: str, key: str, response: dict) -> None: ...
    def recall(self, scope: str, key: str) -> dict | None: ...
    def find_ids(self, rtype: str, param: str, system: str | None, value: str) -> list[str]: ...
    def put_value(self, name: str, value: str) -> None: ...
    def get_value(self, name: str) -> str | None: ...
    def values_with_prefix(self, prefix: str) -> list[tuple[str, str]]: ...
    def enqueue(self, queue: str, body: dict, status: str = "queued") -> int: ...
    def update_work(self, seq: int, status: str, attempts: int, not_before: str, number: int | None = None) -> None: ...
    def compare_and_set(self, name: str, expected: str | None, value: str) -> bool: ...
    def holds_lease(self, name: str, holder: str, fence: int) -> bool: ...


class Store(Protocol):
    def transaction(self) -> Iterator[Transaction]: ...
    def read(self, rtype: str, rid: str) -> Stored | None: ...
    def vread(self, rtype: str, rid: str, version: int) -> Stored | None: ...
    def history(self, rtype: str | None, rid: str | None, since: str | None, count: int, offset: int) -> Page: ...
    def search(self, rtype: str, where: list[tuple[str, list]], order: str, count: int, offset: int,
               total: bool | int = True, seek: tuple[str, list] | None = None) -> Page: ...
    def unsent_events(self, limit: int) -> list[OutboxEvent]: ...
    def mark_sent(self, seqs: list[int]) -> None: ...
    def get_value(self, name: str) -> str | None: ...
    def values_with_prefix(self, prefix: str) -> list[tuple[str, str]]: ...
    def work(self, queue: str, statuses: tuple[str, ...], limit: int, number_range: tuple[int, int] | None = None
             ) -> list[WorkItem]: ...
    def queues_due(self, status: str, now: str) -> list[str]: ...
    def data_version(self) -> int: ...
    def ping(self) -> None: ...
    def claim_lease(self, name: str, holder: str, ttl_s: float) -> int | None: ...
    def renew_lease(self, name: str, holder: str, fence: int, ttl_s: float) -> bool: ...
    def release_lease(self, name: str, holder: str, fence: int) -> None: ...
    def lease(self, name: str) -> tuple[str, int, float] | None: ...
    def mark_sent_fenced(self, seqs: list[int], lease_name: str, holder: str, fence: int) -> bool: ...
    def commit_watch(self, poll_s: float = 0.005, what: str = "outbox") -> Any: ...


def _row_to_stored(row: sqlite3.Row, method: str = "PUT") -> Stored:
    return Stored(row["type"], row["id"], row["version"], row["last_updated"], bool(row["deleted"]),
                  json.loads(row["json"]), method)


def _found(row: sqlite3.Row) -> Stored:
    """A current version as a search returns it, with its creation order."""
    return Stored(row["type"], row["id"], row["version"], row["last_updated"], bool(row["deleted"]),
                  json.loads(row["json"]), "PUT", row["created_seq"])


SQLITE_BY_KEY = " INDEXED BY sqlite_autoindex_resource_1"  # the primary key (type, id) of `resource`


def driving_first(rtype: str, where: list[tuple[str, list]]) -> tuple[tuple[str, list] | None, list]:
    """The first selective criterion (shared.fhir.search.Criterion: a reference, an identifier) as the set of ids
    the search starts from, and the other conditions, checked row by row; (None, where) when none is selective,
    and the search walks the type in its order instead."""
    for n, cond in enumerate(where):
        if getattr(cond, "selective", False):
            return cond.driving(rtype), [*where[:n], *where[n + 1:]]  # type: ignore[attr-defined]
    return None, where


def search_statements(rtype: str, where: list[tuple[str, list]], order: str, count: int, offset: int,
                      total: bool | int, seek: tuple[str, list] | None, by_key: str = ""
                      ) -> tuple[tuple[str, list] | None, tuple[str, list]]:
    """The count (None when `total` is False) and page statements of a search, `?` placeholders on the aliases
    `r` and `s`, for both engines. `total`: True counts every match, a number N counts up to N + 1; `seek`: a
    condition of the page only (the keyset of the page before); `by_key`: how the engine is told to fetch the
    rows of a driving set by primary key (SQLite's planner would otherwise walk the order index and check each
    row against the whole set)."""
    driver, rest = driving_first(rtype, where)
    conds = [*([driver] if driver else []), *rest]
    source = "resource r" + (by_key if driver else "")
    clause = " AND ".join(["r.type=?", "r.deleted=0", *(w for w, _ in conds)])
    args: list[Any] = [rtype, *(a for _, wargs in conds for a in wargs)]
    counting: tuple[str, list] | None = None
    if total is True:
        counting = f"SELECT count(*) AS n FROM {source} WHERE {clause}", args
    elif total is not False:
        counting = f"SELECT count(*) AS n FROM (SELECT 1 FROM {source} WHERE {clause} LIMIT ?) AS m", \
            [*args, int(total) + 1]
    page_clause, page_args = (f"{clause} AND {seek[0]}", [*args, *seek[1]]) if seek else (clause, args)
    return counting, (f"SELECT r.* FROM {source} WHERE {page_clause} ORDER BY {order} LIMIT ? OFFSET ?",
                      [*page_args, count, offset])


def next_version(current: Stored | None, rtype: str, rid: str, resource: dict, expected_version: int | None
                 ) -> tuple[int, str, dict, str, str]:
    """What writing `resource` over `current` stores: version, lastUpdated, body with its meta, its JSON text and
    the history method; 412 when `expected_version` (If-Match) is not the current one."""
    current_version = current.version if current else 0
    if expected_version is not None and expected_version != current_version:
        raise FhirError.single(412, f"version conflict: {rtype}/{rid} is at version {current_version}, "
                                    f"not {expected_version}", code="conflict")
    version, now = current_version + 1, now_instant()
    body = dict(resource, id=rid)
    body["meta"] = dict(resource.get("meta") or {}, versionId=str(version), lastUpdated=now)
    text = compact_json(body)
    return version, now, body, text, "POST" if current is None else "PUT"


def delete_current(tx: Transaction, execute: Any, rtype: str, rid: str) -> Stored | None:
    """A transaction's delete on either engine, `execute` taking SQL with `?` placeholders: a history row marked
    deleted, the resource row kept as a tombstone, its index rows gone."""
    current = tx.read(rtype, rid)
    if current is None or current.deleted:
        return current
    version, now = current.version + 1, now_instant()
    text = compact_json(current.resource)
    execute("INSERT INTO history (type, id, version, last_updated, deleted, method, json)"
            " VALUES (?,?,?,?,1,'DELETE',?)", (rtype, rid, version, now, text))
    execute("UPDATE resource SET version=?, last_updated=?, deleted=1 WHERE type=? AND id=?",
            (version, now, rtype, rid))
    tx.write_index(rtype, rid, [])
    return Stored(rtype, rid, version, now, True, current.resource, "DELETE")


def history_clause(rtype: str | None, rid: str | None, since: str | None) -> tuple[str, list[Any]]:
    """The WHERE clause (with `?` placeholders) and its arguments of a history query on either engine."""
    where, args = [], []
    for column, value in (("type", rtype), ("id", rid)):
        if value is not None:
            where.append(f"{column}=?")
            args.append(value)
    if since:
        where.append("last_updated>=?")
        args.append(since)
    return (" WHERE " + " AND ".join(where)) if where else "", args


class SQLiteTransaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._savepoints = 0

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A part of the transaction that an exception undoes alone: the writes before it stay."""
        self._savepoints += 1
        name = f"sp{self._savepoints}"
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.conn.execute(f"ROLLBACK TO {name}")
            self.conn.execute(f"RELEASE {name}")
            raise
        self.conn.execute(f"RELEASE {name}")

    def lock(self, name: str) -> None:
        """Hold `name` until the transaction ends, so that two transactions locking one name run one after the
        other (a conditional create's query). SQLite's transactions already do: BEGIN IMMEDIATE."""

    def read(self, rtype: str, rid: str) -> Stored | None:
        row = self.conn.execute("SELECT * FROM resource WHERE type=? AND id=?", (rtype, rid)).fetchone()
        return _row_to_stored(row) if row else None

    def write(self, rtype: str, rid: str, resource: dict, index: list[IndexRow],
              expected_version: int | None = None) -> Stored:
        version, now, body, text, method = next_version(self.read(rtype, rid), rtype, rid, resource, expected_version)
        cur = self.conn.execute(
            "INSERT INTO history (type, id, version, last_updated, deleted, method, json) VALUES (?,?,?,?,0,?,?)",
            (rtype, rid, version, now, method, text))
        self.conn.execute(
            "INSERT INTO resource (type, id, version, last_updated, deleted, created_seq, json) VALUES (?,?,?,?,0,?,?)"
            " ON CONFLICT (type, id) DO UPDATE SET version=excluded.version, last_updated=excluded.last_updated,"
            " deleted=0, json=excluded.json", (rtype, rid, version, now, cur.lastrowid, text))
        self.write_index(rtype, rid, index)
        return Stored(rtype, rid, version, now, False, body, method)

    def delete(self, rtype: str, rid: str) -> Stored | None:
        return delete_current(self, self.conn.execute, rtype, rid)

    def write_index(self, rtype: str, rid: str, index: list[IndexRow]) -> None:
        self.conn.execute("DELETE FROM search_index WHERE type=? AND id=?", (rtype, rid))
        self.conn.executemany(
            "INSERT INTO search_index (type, id, param, system, value, date_lo, date_hi) VALUES (?,?,?,?,?,?,?)",
            [(rtype, rid, r.param, r.system, r.value, r.date_lo, r.date_hi) for r in index])

    def add_event(self, event: OutboxEvent) -> None:
        self.conn.execute("INSERT INTO outbox (topic, key, headers, value, created_at) VALUES (?,?,?,?,?)",
                          (event.topic, event.key, json.dumps(event.headers), event.value, now_instant()))

    def mark_applied(self, consumer: str, ce_id: str) -> bool:
        """Record that `consumer` applied event `ce_id`; False when it already had."""
        cur = self.conn.execute("INSERT OR IGNORE INTO applied_event (consumer, ce_id, applied_at) VALUES (?,?,?)",
                                (consumer, ce_id, now_instant()))
        return cur.rowcount == 1

    def remember(self, scope: str, key: str, response: dict) -> None:
        self.conn.execute("INSERT OR REPLACE INTO idempotency (scope, key, response) VALUES (?,?,?)",
                          (scope, key, json.dumps(response)))

    def recall(self, scope: str, key: str) -> dict | None:
        row = self.conn.execute("SELECT response FROM idempotency WHERE scope=? AND key=?", (scope, key)).fetchone()
        return json.loads(row["response"]) if row else None

    def find_ids(self, rtype: str, param: str, system: str | None, value: str) -> list[str]:
        # INDEXED BY: with DISTINCT, SQLite's planner would otherwise scan every index row of the type.
        sql = "SELECT DISTINCT s.id FROM search_index s INDEXED BY search_by_value WHERE s.type=? AND s.param=? " \
              "AND s.value=?"
        args: list[Any] = [rtype, param, value]
        if system is not None:
            sql += " AND s.system=?"
            args.append(system)
        return [r["id"] for r in self.conn.execute(sql, args)]

    def put_value(self, name: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO kv (name, value, updated_at) VALUES (?,?,?)",
                          (name, value, now_instant()))

    def get_value(self, name: str) -> str | None:
        row = self.conn.execute("SELECT value FROM kv WHERE name=?", (name,)).fetchone()
        return row["value"] if row else None

    def values_with_prefix(self, prefix: str) -> list[tuple[str, str]]:
        rows = self.conn.execute("SELECT name, value FROM kv WHERE name LIKE ? ESCAPE '\\'",
                                 (prefix.replace("_", "\\_") + "%",)).fetchall()
        return [(r["name"], r["value"]) for r in rows]

    def enqueue(self, queue: str, body: dict, status: str = "queued") -> int:
        now = now_instant()
        cur = self.conn.execute("INSERT INTO work_item (queue, status, attempts, not_before, body, created_at,"
                                " updated_at) VALUES (?,?,0,?,?,?,?)", (queue, status, now, json.dumps(body), now, now))
        return cur.lastrowid

    def update_work(self, seq: int, status: str, attempts: int, not_before: str, number: int | None = None) -> None:
        self.conn.execute("UPDATE work_item SET status=?, attempts=?, not_before=?, number=coalesce(?, number),"
                          " updated_at=? WHERE seq=?", (status, attempts, not_before, number, now_instant(), seq))

    def compare_and_set(self, name: str, expected: str | None, value: str) -> bool:
        """Set kv `name` to `value` only if it still holds `expected` (None: absent); False when it did not."""
        if expected is None:
            cur = self.conn.execute("INSERT INTO kv (name, value, updated_at) VALUES (?,?,?) ON CONFLICT (name)"
                                    " DO NOTHING", (name, value, now_instant()))
        else:
            cur = self.conn.execute("UPDATE kv SET value=?, updated_at=? WHERE name=? AND value=?",
                                    (value, now_instant(), name, expected))
        return cur.rowcount == 1

    def holds_lease(self, name: str, holder: str, fence: int) -> bool:
        """Whether `holder` still holds lease `name` with this fence: nobody has taken it over since."""
        row = self.conn.execute("SELECT 1 FROM lease WHERE name=? AND holder=? AND fence=?",
                                (name, holder, fence)).fetchone()
        return row is not None


class SQLiteStore:
    """One SQLite file per service, WAL mode, one connection per thread.

    `synchronous` is FULL unless IOP_SQLITE_SYNCHRONOUS (or the argument) says NORMAL: an acknowledged
    commit, whose events the relay may already have published, must survive a power loss.
    """

    def __init__(self, path: str | Path, synchronous: str | None = None) -> None:
        self.path = str(path)
        self.synchronous = (synchronous or sqlite_synchronous()).upper()
        if self.synchronous not in SQLITE_SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}, not {synchronous!r}")
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.RLock()
        migrate_sqlite(self._conn())

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[SQLiteTransaction]:
        conn = self._conn()
        with self._write_lock:
            # IMMEDIATE takes the write lock up front, so two writers never deadlock on upgrade.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield SQLiteTransaction(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def read(self, rtype: str, rid: str) -> Stored | None:
        return SQLiteTransaction(self._conn()).read(rtype, rid)

    def vread(self, rtype: str, rid: str, version: int) -> Stored | None:
        row = self._conn().execute("SELECT * FROM history WHERE type=? AND id=? AND version=?",
                                   (rtype, rid, version)).fetchone()
        return _row_to_stored(row, row["method"]) if row else None

    def history(self, rtype: str | None, rid: str | None, since: str | None, count: int, offset: int) -> Page:
        clause, args = history_clause(rtype, rid, since)
        conn = self._conn()
        total = conn.execute(f"SELECT count(*) FROM history{clause}", args).fetchone()[0]
        rows = conn.execute(f"SELECT * FROM history{clause} ORDER BY seq DESC LIMIT ? OFFSET ?",
                            [*args, count, offset]).fetchall()
        return Page(total, [_row_to_stored(r, r["method"]) for r in rows])

    def search(self, rtype: str, where: list[tuple[str, list]], order: str, count: int, offset: int,
               total: bool | int = True, seek: tuple[str, list] | None = None) -> Page:
        """`where` holds SQL conditions on the alias `r` (resource) with their arguments, ANDed; `total`: count
        every match (True), none (False: Page.total None) or up to a bound N (Page.total at most N + 1); `seek`:
        a condition of this page only, as keyset paging adds."""
        counting, page = search_statements(rtype, where, order, count, offset, total, seek, SQLITE_BY_KEY)
        conn = self._conn()
        matched = conn.execute(*counting).fetchone()[0] if counting else None
        return Page(matched, [_found(r) for r in conn.execute(*page).fetchall()])

    def unsent_events(self, limit: int) -> list[OutboxEvent]:
        rows = self._conn().execute("SELECT * FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT ?",
                                    (limit,)).fetchall()
        return [OutboxEvent(r["topic"], r["key"], [tuple(h) for h in json.loads(r["headers"])], r["value"],
                            r["seq"]) for r in rows]

    def mark_sent(self, seqs: list[int]) -> None:
        if not seqs:
            return
        with self.transaction() as tx:
            tx.conn.executemany("UPDATE outbox SET sent_at=? WHERE seq=?", [(now_instant(), s) for s in seqs])

    def get_value(self, name: str) -> str | None:
        return SQLiteTransaction(self._conn()).get_value(name)

    def values_with_prefix(self, prefix: str) -> list[tuple[str, str]]:
        return SQLiteTransaction(self._conn()).values_with_prefix(prefix)

    def work(self, queue: str, statuses: tuple[str, ...], limit: int, number_range: tuple[int, int] | None = None
             ) -> list[WorkItem]:
        """A queue's items in FIFO order, optionally only those numbered within number_range (inclusive)."""
        sql = f"SELECT * FROM work_item WHERE queue=? AND status IN ({','.join('?' * len(statuses))})"
        args: list[Any] = [queue, *statuses]
        if number_range is not None:
            sql += " AND number BETWEEN ? AND ?"
            args += list(number_range)
        rows = self._conn().execute(sql + " ORDER BY seq LIMIT ?", [*args, limit]).fetchall()
        return [WorkItem(r["seq"], r["queue"], r["status"], r["attempts"], r["not_before"], r["number"],
                         json.loads(r["body"]), r["created_at"], r["updated_at"]) for r in rows]

    def queues_due(self, status: str, now: str) -> list[str]:
        rows = self._conn().execute("SELECT DISTINCT queue FROM work_item WHERE status=? AND not_before<=?",
                                    (status, now)).fetchall()
        return [r["queue"] for r in rows]

    def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap way to notice new outbox rows."""
        return self._conn().execute("PRAGMA data_version").fetchone()[0]

    def ping(self) -> None:
        self._conn().execute("SELECT 1").fetchone()

    # -- replicas: leases, fenced marks, the commit watch ---------------------------------------
    def claim_lease(self, name: str, holder: str, ttl_s: float) -> int | None:
        """Take lease `name` for `ttl_s` seconds if it is free or expired; its fence number, or None when another
        holder has it. A holder asking again while it still holds it keeps its fence, with a new expiry."""
        now = time.time()
        row = self._conn().execute("SELECT holder, fence, expires_at FROM lease WHERE name=?", (name,)).fetchone()
        if row is not None and row["expires_at"] > now and row["holder"] != holder:
            return None  # the common case of a standby: no write
        with self.transaction() as tx:
            row = tx.conn.execute("SELECT holder, fence, expires_at FROM lease WHERE name=?", (name,)).fetchone()
            if row is None:
                tx.conn.execute("INSERT INTO lease (name, holder, fence, expires_at) VALUES (?,?,1,?)",
                                (name, holder, now + ttl_s))
                return 1
            if row["expires_at"] > now:
                if row["holder"] != holder:
                    return None
                tx.conn.execute("UPDATE lease SET expires_at=? WHERE name=?", (now + ttl_s, name))
                return row["fence"]
            tx.conn.execute("UPDATE lease SET holder=?, fence=?, expires_at=? WHERE name=?",
                            (holder, row["fence"] + 1, now + ttl_s, name))
            return row["fence"] + 1

    def renew_lease(self, name: str, holder: str, fence: int, ttl_s: float) -> bool:
        """Extend a lease still held with this fence; False when it was taken over (the holder must stop)."""
        with self.transaction() as tx:
            cur = tx.conn.execute("UPDATE lease SET expires_at=? WHERE name=? AND holder=? AND fence=?",
                                  (time.time() + ttl_s, name, holder, fence))
            return cur.rowcount == 1

    def release_lease(self, name: str, holder: str, fence: int) -> None:
        """Give a lease up at once (a clean stop), so another replica need not wait for it to expire."""
        with self.transaction() as tx:
            tx.conn.execute("UPDATE lease SET expires_at=0 WHERE name=? AND holder=? AND fence=?",
                            (name, holder, fence))

    def lease(self, name: str) -> tuple[str, int, float] | None:
        """(holder, fence, expires_at as Unix time) of a lease, for status and tests."""
        row = self._conn().execute("SELECT holder, fence, expires_at FROM lease WHERE name=?", (name,)).fetchone()
        return (row["holder"], row["fence"], row["expires_at"]) if row else None

    def mark_sent_fenced(self, seqs: list[int], lease_name: str, holder: str, fence: int) -> bool:
        """mark_sent, only while `holder` holds the lease with this fence; False (nothing marked) once deposed."""
        with self.transaction() as tx:
            if not tx.holds_lease(lease_name, holder, fence):
                return False
            tx.conn.executemany("UPDATE outbox SET sent_at=? WHERE seq=?", [(now_instant(), s) for s in seqs])
        return True

    def commit_watch(self, poll_s: float = 0.005, what: str = "outbox") -> SQLiteCommitWatch:
        """A doorbell that rings when another connection commits (for the calling thread only); on SQLite any
        commit rings it, whatever it added (`what`: "outbox" rows or "work" items)."""
        return SQLiteCommitWatch(self, poll_s)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


# How soon a commit watch (either engine's) notices `stop` while nothing is written: a worker's consumer notices it
# within its poll (1 s) as well. Each slice wakes the watching thread: about 0.1 ms of CPU on a small 2-core VM.
WATCH_SLICE_S = 1.0


class SQLiteCommitWatch:
    """Notices commits of other connections by SQLite's `data_version`, which changes on each of them.

    Between checks it sleeps on the write-ahead log: inotify wakes it when any process writes `<db>-wal`, so an
    idle watch costs nothing but a check every BELL_SLICE_S. A commit becomes visible a moment after its last
    write, so for SETTLE_S after each wake it checks every `poll_s`. Without inotify (not Linux, no instance
    left) it checks every `poll_s` throughout.
    """

    BELL_SLICE_S = WATCH_SLICE_S
    SETTLE_S = 0.05

    def __init__(self, store: SQLiteStore, poll_s: float) -> None:
        self.store, self.poll_s = store, poll_s
        self._seen: int | None = None
        self._bell = _WalBell.open(store.path)

    def wait(self, stop: threading.Event, timeout_s: float) -> bool:
        """Wait up to timeout_s (or until `stop`) for a commit since the last call; True when one happened."""
        deadline = time.monotonic() + timeout_s
        settle_until = 0.0
        while True:
            version = self.store.data_version()
            if version != self._seen:
                first, self._seen = self._seen is None, version
                if not first:
                    return True
            now = time.monotonic()
            if now >= deadline or stop.is_set():
                return False
            if self._bell is None or now < settle_until:
                if stop.wait(min(self.poll_s, deadline - now)):
                    return False
            elif self._bell.wait(min(deadline - now, self.BELL_SLICE_S)):
                settle_until = time.monotonic() + self.SETTLE_S

    def close(self) -> None:
        if self._bell is not None:
            self._bell.close()
            self._bell = None


class _WalBell:
    """inotify on the database's write-ahead log (`<name>-wal`), ringing when it is written or made.

    The log itself is watched, not its directory: the services' databases share one directory, and a watch
    on it would wake every watcher of every service at each page any of them writes. The directory is
    watched for the log's creation only, so a log made after the watch (or made again) is watched too.
    """

    def __init__(self, path: Path) -> None:
        from inotify_simple import INotify, flags  # Linux only: open() falls back to polling elsewhere

        self._flags = flags
        self._wal = path.name + "-wal"
        self._wal_path = str(path.parent / self._wal)
        self._inotify = INotify()
        try:
            self._dir = self._inotify.add_watch(str(path.parent), flags.CREATE | flags.MOVED_TO)
            self._log = self._watch_log()
        except BaseException:
            self._inotify.close()
            raise

    def _watch_log(self) -> int | None:
        try:
            return self._inotify.add_watch(self._wal_path, self._flags.MODIFY)
        except FileNotFoundError:  # not made yet: its creation rings, and is watched from then on
            return None

    @classmethod
    def open(cls, path: str) -> _WalBell | None:
        if path == ":memory:":
            return None
        try:
            return cls(Path(path).resolve())
        except (ImportError, OSError):
            return None

    def wait(self, timeout_s: float) -> bool:
        """True when the log was written or made within timeout_s (the directory's other files do not count)."""
        rang = False
        for event in self._inotify.read(timeout=max(1, int(timeout_s * 1000))):
            if event.wd == self._dir:
                if event.name == self._wal:
                    self._log, rang = self._watch_log(), True
            elif event.mask & self._flags.IGNORED:
                if event.wd == self._log:  # the log was removed (the last connection closed): wait for the next
                    self._log = None
            else:
                rang = True
        return rang

    def close(self) -> None:
        self._inotify.close()


def is_postgresql(target: str | Path) -> bool:
    return str(target).startswith(PG_SCHEMES)


def open_store(target: str | Path) -> Store:
    """The store a service's IOP_<SERVICE>_DB names: a `postgresql://` URL, or else a SQLite file path."""
    if is_postgresql(target):
        from shared.fhir.store_pg import PostgresStore

        return PostgresStore(str(target))
    return SQLiteStore(target)
