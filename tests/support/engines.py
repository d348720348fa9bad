"""The store engines the replica tests run on, and a fresh store locator of each for one test.

SQLite: a new file under the test's tmp_path; PostgreSQL: a new database on the session's throwaway server
(the `pg_server` fixture), dropped after the test.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.fhir.store import Store, open_store

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
