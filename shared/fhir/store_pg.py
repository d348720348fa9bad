"""The PostgreSQL adapter of the store interface (shared/fhir/store.py), on psycopg 3 and psycopg_pool.

Same tables, same semantics as SQLite, and the same SQL fragments from the search layer: they are written
with `?` placeholders on the aliases `r` (resource) and `s` (search_index), and `pg_sql` turns them into
psycopg's `%s` (escaping a literal `%`). Text columns compare byte by byte (COLLATE "C") as in SQLite.

Concurrency. SQLite runs one write transaction at a time; PostgreSQL runs them side by side in READ COMMITTED,
so what SQLite gets from that serialisation is taken here with transaction-scoped advisory locks:
- reading or writing a resource inside a transaction locks it (type and id) until commit, so a
  read-modify-write sees the last committed version and versions have no gap and no repeat;
- `Transaction.lock(name)` serialises what has no row to lock yet, such as a conditional create's query;
- `mark_applied` inserts into a primary key, so a second transaction applying the same `ce_id` waits for the
  first and then finds it applied.
Two transactions that lock the same resources in opposite orders deadlock; PostgreSQL aborts one of them
after `deadlock_timeout`, and that one fails as StoreUnavailable (503, or a consumer's retry).

Availability. The pool is created lazily in the process that uses it (a gunicorn worker after the fork: it
checks os.getpid()), and the schema is migrated then. A pooled connection found dead when a read or a BEGIN
uses it (it idled through a server restart) is dropped and the same step runs once more on another; connecting
waits at most IOP_PG_TIMEOUT_S, so does waiting for a pooled connection, and a statement (lock waits included) at most
IOP_PG_STATEMENT_TIMEOUT_MS. Any of these failing, or the server going away, raises StoreUnavailable; the pool
reconnects by itself once the server is back.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from shared.config import env_int, redact_url
from shared.fhir.migrations import migrate_postgresql
from shared.fhir.store import (
    WATCH_SLICE_S,
    IndexRow,
    OutboxEvent,
    Page,
    Stored,
    StoreUnavailable,
    WorkItem,
    _found,
    _row_to_stored,
    delete_current,
    history_clause,
    next_version,
    search_statements,
)
from shared.fhir.util import now_instant

OUTBOX_CHANNEL = "iop_outbox"  # NOTIFY channel of transactions that added outbox rows
WORK_CHANNEL = "iop_work"  # ... and of those that queued work items
CHANNELS = {"outbox": OUTBOX_CHANNEL, "work": WORK_CHANNEL}
_NOW = "extract(epoch FROM clock_timestamp())::float8"  # leases expire by the database's clock
T = TypeVar("T")

_LITERAL = re.compile(r"('(?:[^']|'')*')")


@functools.lru_cache(maxsize=4096)
def pg_sql(sql: str) -> str:
    """SQL with `?` placeholders as psycopg wants it: `%s`, and `%` doubled; quoted literals are left as they are
    except for the doubling."""
    parts = _LITERAL.split(sql)
    return "".join(part.replace("%", "%%") if i % 2 else part.replace("%", "%%").replace("?", "%s")
                   for i, part in enumerate(parts))


def lock_key(name: str) -> int:
    """A signed 64-bit key for pg_advisory_xact_lock, from any name."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "big", signed=True)


@contextmanager
def _unavailable() -> Iterator[None]:
    """psycopg's operational errors (no server, connection lost, timeout, deadlock) as StoreUnavailable."""
    try:
        yield
    except psycopg.OperationalError as exc:  # PoolTimeout, QueryCanceled, DeadlockDetected are among them
        raise StoreUnavailable(type(exc).__name__) from exc
    except psycopg.InterfaceError as exc:  # a connection already closed under us
        raise StoreUnavailable(type(exc).__name__) from exc


class PostgresTransaction:
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self._savepoints = 0
        self._locked: set[int] = set()

    def execute(self, sql: str, args: Any = ()) -> psycopg.Cursor:
        with _unavailable():
            return self.conn.execute(pg_sql(sql), args)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A part of the transaction that an exception undoes alone: the writes before it stay."""
        self._savepoints += 1
        name = f"sp{self._savepoints}"
        locked = set(self._locked)
        self.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.execute(f"ROLLBACK TO SAVEPOINT {name}")
            self.execute(f"RELEASE SAVEPOINT {name}")
            self._locked = locked  # PostgreSQL releases the advisory locks taken since the savepoint
            raise
        self.execute(f"RELEASE SAVEPOINT {name}")

    def lock(self, name: str) -> None:
        key = lock_key(name)
        if key not in self._locked:
            self.execute("SELECT pg_advisory_xact_lock(?)", (key,))
            self._locked.add(key)

    def read(self, rtype: str, rid: str) -> Stored | None:
        self.lock(f"resource:{rtype}/{rid}")  # then a new snapshot: the last committed version
        row = self.execute("SELECT * FROM resource WHERE type=? AND id=?", (rtype, rid)).fetchone()
        return _row_to_stored(row) if row else None

    def write(self, rtype: str, rid: str, resource: dict, index: list[IndexRow],
              expected_version: int | None = None) -> Stored:
        version, now, body, text, method = next_version(self.read(rtype, rid), rtype, rid, resource, expected_version)
        self.execute(
            "WITH h AS (INSERT INTO history (type, id, version, last_updated, deleted, method, json)"
            " VALUES (?,?,?,?,0,?,?) RETURNING seq)"
            " INSERT INTO resource (type, id, version, last_updated, deleted, created_seq, json)"
            " SELECT ?,?,?,?,0,h.seq,? FROM h"
            " ON CONFLICT (type, id) DO UPDATE SET version=excluded.version, last_updated=excluded.last_updated,"
            " deleted=0, json=excluded.json",
            (rtype, rid, version, now, method, text, rtype, rid, version, now, text))
        self.write_index(rtype, rid, index)
        return Stored(rtype, rid, version, now, False, body, method)

    def delete(self, rtype: str, rid: str) -> Stored | None:
        return delete_current(self, self.execute, rtype, rid)

    def write_index(self, rtype: str, rid: str, index: list[IndexRow]) -> None:
        self.execute("DELETE FROM search_index WHERE type=? AND id=?", (rtype, rid))
        if index:
            with _unavailable(), self.conn.cursor() as cur:
                cur.executemany(
                    pg_sql("INSERT INTO search_index (type, id, param, system, value, date_lo, date_hi)"
                           " VALUES (?,?,?,?,?,?,?)"),
                    [(rtype, rid, r.param, r.system, r.value, r.date_lo, r.date_hi) for r in index])

    def add_event(self, event: OutboxEvent) -> None:
        self.execute("INSERT INTO outbox (topic, key, headers, value, created_at) VALUES (?,?,?,?,?)",
                     (event.topic, event.key, json.dumps(event.headers), event.value, now_instant()))
        # Rings the relay's doorbell (PgCommitWatch) when, and only if, this transaction commits; PostgreSQL
        # folds the identical notifications of one transaction into one. (Sent for each row, not once: a
        # savepoint rolled back takes its notification with it.)
        self.execute(f"SELECT pg_notify('{OUTBOX_CHANNEL}', '')")

    def mark_applied(self, consumer: str, ce_id: str) -> bool:
        """Record that `consumer` applied event `ce_id`; False when it already had. A concurrent transaction
        recording the same pair waits on the key until this one ends."""
        cur = self.execute("INSERT INTO applied_event (consumer, ce_id, applied_at) VALUES (?,?,?)"
                           " ON CONFLICT DO NOTHING", (consumer, ce_id, now_instant()))
        return cur.rowcount == 1

    def remember(self, scope: str, key: str, response: dict) -> None:
        self.execute("INSERT INTO idempotency (scope, key, response) VALUES (?,?,?)"
                     " ON CONFLICT (scope, key) DO UPDATE SET response=excluded.response",
                     (scope, key, json.dumps(response)))

    def recall(self, scope: str, key: str) -> dict | None:
        row = self.execute("SELECT response FROM idempotency WHERE scope=? AND key=?", (scope, key)).fetchone()
        return json.loads(row["response"]) if row else None

    def find_ids(self, rtype: str, param: str, system: str | None, value: str) -> list[str]:
        sql = "SELECT DISTINCT s.id FROM search_index s WHERE s.type=? AND s.param=? AND s.value=?"
        args: list[Any] = [rtype, param, value]
        if system is not None:
            sql += " AND s.system=?"
            args.append(system)
        return [r["id"] for r in self.execute(sql, args).fetchall()]

    def put_value(self, name: str, value: str) -> None:
        self.execute("INSERT INTO kv (name, value, updated_at) VALUES (?,?,?)"
                     " ON CONFLICT (name) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
                     (name, value, now_instant()))

    def get_value(self, name: str) -> str | None:
        row = self.execute("SELECT value FROM kv WHERE name=?", (name,)).fetchone()
        return row["value"] if row else None

    def values_with_prefix(self, prefix: str) -> list[tuple[str, str]]:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self.execute("SELECT name, value FROM kv WHERE name LIKE ? ESCAPE '\\' ORDER BY name",
                            (escaped + "%",)).fetchall()
        return [(r["name"], r["value"]) for r in rows]

    def enqueue(self, queue: str, body: dict, status: str = "queued") -> int:
        now = now_instant()
        row = self.execute("INSERT INTO work_item (queue, status, attempts, not_before, body, created_at,"
                           " updated_at) VALUES (?,?,0,?,?,?,?) RETURNING seq",
                           (queue, status, now, json.dumps(body), now, now)).fetchone()
        self.execute(f"SELECT pg_notify('{WORK_CHANNEL}', '')")  # the delivery workers' doorbell, on commit
        return row["seq"]

    def update_work(self, seq: int, status: str, attempts: int, not_before: str, number: int | None = None) -> None:
        self.execute("UPDATE work_item SET status=?, attempts=?, not_before=?, number=coalesce(?::integer, number),"
                     " updated_at=? WHERE seq=?", (status, attempts, not_before, number, now_instant(), seq))

    # -- replicas (migration 2) -------------------------------------------------------------
    def compare_and_set(self, name: str, expected: str | None, value: str) -> bool:
        """Set kv `name` to `value` only if it still holds `expected` (None: absent); False when it did not. A
        concurrent setter of the same name waits for this transaction, then finds the value changed."""
        if expected is None:
            cur = self.execute("INSERT INTO kv (name, value, updated_at) VALUES (?,?,?) ON CONFLICT (name) DO NOTHING",
                               (name, value, now_instant()))
        else:
            cur = self.execute("UPDATE kv SET value=?, updated_at=? WHERE name=? AND value=?",
                               (value, now_instant(), name, expected))
        return cur.rowcount == 1

    def holds_lease(self, name: str, holder: str, fence: int) -> bool:
        """Whether `holder` still holds lease `name` with this fence; the row stays locked (FOR SHARE) until the
        transaction ends, so nobody takes the lease over while this transaction writes on its behalf."""
        row = self.execute("SELECT 1 FROM lease WHERE name=? AND holder=? AND fence=? FOR SHARE",
                           (name, holder, fence)).fetchone()
        return row is not None


class PostgresStore:
    """One PostgreSQL database per service, a connection pool per process.

    `dsn` is a libpq URL (`postgresql://user:password@host:port/dbname`). Pool size, connect and pool-wait
    timeout and statement timeout come from IOP_PG_POOL_SIZE, IOP_PG_TIMEOUT_S, IOP_PG_STATEMENT_TIMEOUT_MS.
    """

    def __init__(self, dsn: str, pool_size: int | None = None, timeout_s: float | None = None,
                 statement_timeout_ms: int | None = None) -> None:
        self.dsn = dsn
        self.pool_size = pool_size or env_int("IOP_PG_POOL_SIZE", 8)
        self.timeout_s = timeout_s or float(env_int("IOP_PG_TIMEOUT_S", 5))
        self.statement_timeout_ms = statement_timeout_ms or env_int("IOP_PG_STATEMENT_TIMEOUT_MS", 10000)
        self._pool: ConnectionPool | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"PostgresStore({redact_url(self.dsn)!r})"

    # -- connections ------------------------------------------------------------------------
    def _open_pool(self) -> ConnectionPool:
        pid = os.getpid()
        pool = self._pool
        if pool is not None and self._pid == pid:
            return pool
        with self._lock:
            if self._pool is None or self._pid != pid:
                # A pool inherited through fork() belongs to the parent: left alone, never closed from here.
                self._local = threading.local()
                pool = ConnectionPool(
                    self.dsn, min_size=1, max_size=max(1, self.pool_size), timeout=self.timeout_s,
                    open=False, name=f"iop-{pid}",
                    reconnect_timeout=max(60.0, self.timeout_s), num_workers=1,
                    kwargs={"autocommit": True, "row_factory": dict_row, "prepare_threshold": None,
                            "connect_timeout": max(1, int(self.timeout_s)),
                            "options": f"-c statement_timeout={self.statement_timeout_ms}"
                                       f" -c idle_in_transaction_session_timeout={self.statement_timeout_ms * 3}",
                            "application_name": "iop-suite"})
                pool.open(wait=False)
                try:
                    with _unavailable(), pool.connection() as conn:
                        migrate_postgresql(conn)
                except BaseException:
                    pool.close(timeout=0)
                    raise
                self._pool, self._pid = pool, pid
            return self._pool

    @contextmanager
    def _pooled(self) -> Iterator[psycopg.Connection]:
        """A connection from this process's pool, checked, for the time of the block."""
        with _unavailable():
            pool = self._open_pool()
            try:
                conn = pool.getconn()
            except PoolTimeout:
                self._renew_if_failing(pool)
                raise
        try:
            yield conn
        finally:
            with _unavailable():
                pool.putconn(conn)

    def _renew_if_failing(self, pool: ConnectionPool) -> None:
        """After a wait in vain while connection attempts fail, start over with a new pool: psycopg_pool's own
        reconnection backs off exponentially, so after a long outage it would come back tens of seconds late.
        A pool that timed out only because every connection is busy is kept."""
        if pool.get_stats().get("connections_errors", 0) == 0:
            return
        with self._lock:
            if self._pool is pool:
                self._pool, self._pid = None, 0
        pool.close(timeout=0)

    def _run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """`work` on the connection of this thread's open transaction, else on a pooled one. A pooled connection
        found dead (it idled through a server restart) is dropped and `work`, a read, runs once more on another."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with _unavailable():
                return work(conn)
        for attempt in range(2):
            with self._pooled() as conn:
                try:
                    return work(conn)
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    if attempt or not conn.broken:
                        raise StoreUnavailable(type(exc).__name__) from exc
            self._drop_dead()
        raise AssertionError("not reached")

    def _drop_dead(self) -> None:
        """After a server restart every idle connection is dead: test them all now, so the next one is alive."""
        with suppress(psycopg.Error):
            self._open_pool().check()

    def _query(self, sql: str, args: Any = ()) -> list[dict[str, Any]]:
        return self._run(lambda conn: conn.execute(pg_sql(sql), args).fetchall())

    @contextmanager
    def transaction(self) -> Iterator[PostgresTransaction]:
        if getattr(self._local, "conn", None) is not None:
            raise RuntimeError("a store transaction is already open in this thread")
        with ExitStack() as pooled:
            for attempt in range(2):
                conn = pooled.enter_context(self._pooled())
                try:
                    conn.execute("BEGIN")
                    break
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:  # dead since its last use
                    if attempt or not conn.broken:
                        raise StoreUnavailable(type(exc).__name__) from exc
                    pooled.close()
                    self._drop_dead()
            pooled.enter_context(_unavailable())
            self._local.conn = conn
            try:
                try:
                    yield PostgresTransaction(conn)
                except BaseException:
                    if not conn.broken:
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            finally:
                self._local.conn = None

    # -- reads ------------------------------------------------------------------------------
    def read(self, rtype: str, rid: str) -> Stored | None:
        rows = self._query("SELECT * FROM resource WHERE type=? AND id=?", (rtype, rid))
        return _row_to_stored(rows[0]) if rows else None

    def vread(self, rtype: str, rid: str, version: int) -> Stored | None:
        rows = self._query("SELECT * FROM history WHERE type=? AND id=? AND version=?", (rtype, rid, version))
        return _row_to_stored(rows[0], rows[0]["method"]) if rows else None

    def history(self, rtype: str | None, rid: str | None, since: str | None, count: int, offset: int) -> Page:
        clause, args = history_clause(rtype, rid, since)

        def page(conn: psycopg.Connection) -> tuple[int, list[dict[str, Any]]]:
            total = conn.execute(pg_sql(f"SELECT count(*) AS n FROM history{clause}"), args).fetchone()["n"]
            return total, conn.execute(pg_sql(f"SELECT * FROM history{clause} ORDER BY seq DESC LIMIT ? OFFSET ?"),
                                       [*args, count, offset]).fetchall()

        total, rows = self._run(page)
        return Page(total, [_row_to_stored(r, r["method"]) for r in rows])

    def search(self, rtype: str, where: list[tuple[str, list]], order: str, count: int, offset: int,
               total: bool | int = True, seek: tuple[str, list] | None = None) -> Page:
        """As SQLiteStore.search: the same fragments on `r`, ANDed, the same statements."""
        counting, page = search_statements(rtype, where, order, count, offset, total, seek)

        def run(conn: psycopg.Connection) -> tuple[int | None, list[dict[str, Any]]]:
            matched = conn.execute(pg_sql(counting[0]), counting[1]).fetchone()["n"] if counting else None
            return matched, conn.execute(pg_sql(page[0]), page[1]).fetchall()

        matched, rows = self._run(run)
        return Page(matched, [_found(r) for r in rows])

    def unsent_events(self, limit: int) -> list[OutboxEvent]:
        # The xmin fence (SCALEOUT §2.3): no row of a transaction at or after the oldest one still open, so a
        # later commit is never published before an earlier-numbered row that commits after it, nor skipped.
        rows = self._query("SELECT * FROM outbox WHERE sent_at IS NULL"
                           " AND xid < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY seq LIMIT ?", (limit,))
        return [OutboxEvent(r["topic"], r["key"], [tuple(h) for h in json.loads(r["headers"])], r["value"],
                            r["seq"]) for r in rows]

    def mark_sent(self, seqs: list[int]) -> None:
        if not seqs:
            return
        with self.transaction() as tx:
            tx.execute("UPDATE outbox SET sent_at=? WHERE seq = ANY(?)", (now_instant(), list(seqs)))

    def get_value(self, name: str) -> str | None:
        rows = self._query("SELECT value FROM kv WHERE name=?", (name,))
        return rows[0]["value"] if rows else None

    def values_with_prefix(self, prefix: str) -> list[tuple[str, str]]:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._query("SELECT name, value FROM kv WHERE name LIKE ? ESCAPE '\\' ORDER BY name",
                           (escaped + "%",))
        return [(r["name"], r["value"]) for r in rows]

    def work(self, queue: str, statuses: tuple[str, ...], limit: int, number_range: tuple[int, int] | None = None
             ) -> list[WorkItem]:
        """A queue's items in FIFO order, optionally only those numbered within number_range (inclusive)."""
        sql = f"SELECT * FROM work_item WHERE queue=? AND status IN ({','.join('?' * len(statuses))})"
        args: list[Any] = [queue, *statuses]
        if number_range is not None:
            sql += " AND number BETWEEN ? AND ?"
            args += list(number_range)
        rows = self._query(sql + " ORDER BY seq LIMIT ?", [*args, limit])
        return [WorkItem(r["seq"], r["queue"], r["status"], r["attempts"], r["not_before"], r["number"],
                         json.loads(r["body"]), r["created_at"], r["updated_at"]) for r in rows]

    def queues_due(self, status: str, now: str) -> list[str]:
        rows = self._query("SELECT DISTINCT queue FROM work_item WHERE status=? AND not_before<=? ORDER BY queue",
                           (status, now))
        return [r["queue"] for r in rows]

    def data_version(self) -> int:
        """Changes when a transaction commits resources, events or work items: the newest sequence numbers and the
        number of unsent events, from their indexes (an event that commits after a later one still counts)."""
        rows = self._query(
            "SELECT (SELECT coalesce(max(seq), 0) FROM history) AS h, (SELECT coalesce(max(seq), 0) FROM outbox) AS o,"
            " (SELECT count(*) FROM outbox WHERE sent_at IS NULL) AS u, (SELECT coalesce(max(seq), 0) FROM work_item)"
            " AS w")
        r = rows[0]
        return hash((r["h"], r["o"], r["u"], r["w"]))

    def ping(self) -> None:
        self._query("SELECT 1 AS ok")

    # -- replicas: leases on the database clock, fenced marks, LISTEN/NOTIFY ------------------
    def claim_lease(self, name: str, holder: str, ttl_s: float) -> int | None:
        """As SQLiteStore.claim_lease, in one statement on the database's clock (replicas on several hosts)."""
        with self.transaction() as tx:
            row = tx.execute(
                "INSERT INTO lease AS l (name, holder, fence, expires_at) VALUES (?, ?, 1, " + _NOW + " + ?)"
                " ON CONFLICT (name) DO UPDATE SET holder=excluded.holder, expires_at=excluded.expires_at,"
                " fence=CASE WHEN l.holder=excluded.holder AND l.expires_at > " + _NOW + " THEN l.fence"
                " ELSE l.fence + 1 END"
                " WHERE l.holder=excluded.holder OR l.expires_at <= " + _NOW + " RETURNING fence",
                (name, holder, float(ttl_s))).fetchone()
        return row["fence"] if row else None

    def renew_lease(self, name: str, holder: str, fence: int, ttl_s: float) -> bool:
        with self.transaction() as tx:
            cur = tx.execute("UPDATE lease SET expires_at=" + _NOW + " + ? WHERE name=? AND holder=? AND fence=?",
                             (float(ttl_s), name, holder, fence))
            return cur.rowcount == 1

    def release_lease(self, name: str, holder: str, fence: int) -> None:
        with self.transaction() as tx:
            tx.execute("UPDATE lease SET expires_at=0 WHERE name=? AND holder=? AND fence=?", (name, holder, fence))

    def lease(self, name: str) -> tuple[str, int, float] | None:
        rows = self._query("SELECT holder, fence, expires_at FROM lease WHERE name=?", (name,))
        return (rows[0]["holder"], rows[0]["fence"], rows[0]["expires_at"]) if rows else None

    def mark_sent_fenced(self, seqs: list[int], lease_name: str, holder: str, fence: int) -> bool:
        with self.transaction() as tx:
            if not tx.holds_lease(lease_name, holder, fence):
                return False
            tx.execute("UPDATE outbox SET sent_at=? WHERE seq = ANY(?)", (now_instant(), list(seqs)))
        return True

    def commit_watch(self, poll_s: float = 0.005, what: str = "outbox") -> PgCommitWatch:
        """A doorbell: LISTEN on a connection of its own (not pooled, never through a transaction pooler), rung
        by the NOTIFY of each transaction that adds outbox rows (`what` "outbox", the relay's) or work items
        ("work", the delivery workers')."""
        return PgCommitWatch(self.dsn, self.timeout_s, CHANNELS[what])

    def close(self) -> None:
        with self._lock:
            if self._pool is not None and self._pid == os.getpid():
                self._pool.close(timeout=1)
            self._pool, self._pid = None, 0


class PgCommitWatch:
    """LISTEN on a direct connection (iop_outbox, or iop_work); `wait` returns True at the first notification (a
    commit that added such rows), False when the time is up. A lost connection counts as a ring: the caller
    re-scans."""

    def __init__(self, dsn: str, timeout_s: float, channel: str = OUTBOX_CHANNEL) -> None:
        self.dsn, self.timeout_s, self.channel = dsn, timeout_s, channel
        self._conn: psycopg.Connection | None = None

    def _listening(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=max(1, int(self.timeout_s)),
                                         application_name="iop-suite relay")
            self._conn.execute(f"LISTEN {self.channel}")
        return self._conn

    def wait(self, stop: threading.Event, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        try:
            conn = self._listening()
            while True:
                slice_s = min(max(deadline - time.monotonic(), 0.0), WATCH_SLICE_S)  # notices `stop` within one
                rang = any(True for _ in conn.notifies(timeout=slice_s, stop_after=1))
                if rang:
                    while any(True for _ in conn.notifies(timeout=0, stop_after=1)):
                        pass  # several commits since: one scan covers them
                    return True
                if stop.is_set() or time.monotonic() >= deadline:
                    return False
        except psycopg.Error:
            self.close()
            stop.wait(min(timeout_s, 1.0))
            return True

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
