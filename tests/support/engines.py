"""The store engines the replica tests run on, and a fresh store locator of each for one test.

SQLite: a new file under the test's tmp_path; PostgreSQL: a new database on the session's throwaway server
(the `pg_server` fixture), dropped after the test.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from shared.fhir.store import SQLiteStore, SQLiteTransaction, Store, Transaction, open_store

ENGINES = ("sqlite", "postgresql")


def open_locator(locator: str) -> Store:
    return open_store(locator)


def fresh_locator(engine: str, tmp_path: Path, request: pytest.FixtureRequest, name: str = "store") -> Iterator[str]:
    """A new empty store's locator on `engine`."""
    if engine == "sqlite":
        yield str(tmp_path / f"{name}.db")
        return
    server = request.getfixturevalue("pg_server")
    url = server.create_database(name)
    try:
        yield url
    finally:
        server.drop_database(url)


def execute(tx: Transaction, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
    """`sql`, with `?` placeholders, run in an open transaction of either engine; its rows as tuples."""
    if isinstance(tx, SQLiteTransaction):
        cursor = tx.conn.execute(sql, tuple(args))
    else:  # PostgresTransaction: it turns `?` into psycopg's `%s`
        cursor = tx.execute(sql, tuple(args))
    if cursor.description is None:
        return []
    return [tuple(row.values()) if isinstance(row, dict) else tuple(row) for row in cursor.fetchall()]


def query(store: Store, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
    """`sql` run in a transaction of its own on `store`; its rows as tuples."""
    with store.transaction() as tx:
        return execute(tx, sql, args)


def script(store: Store, sqlite_sql: str, postgresql_sql: str) -> None:
    """The statements of the store's engine (`;`-separated, no parameters) run in one transaction."""
    statements = sqlite_sql if isinstance(store, SQLiteStore) else postgresql_sql
    with store.transaction() as tx:
        for statement in filter(None, (s.strip() for s in statements.split(";"))):
            execute(tx, statement)
