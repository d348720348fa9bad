"""Given a store on a real SQLite file, an acknowledged commit is synced to disk before it is acknowledged."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from shared.fhir.store import SQLiteStore

FULL, NORMAL = 2, 1  # what PRAGMA synchronous reports


def synchronous_of_each_connection(store: SQLiteStore, threads: int = 3) -> list[int]:
    """The setting as every connection sees it: the store opens one per thread."""
    seen: list[int] = []

    def look() -> None:
        with store.transaction() as tx:
            seen.append(tx.conn.execute("PRAGMA synchronous").fetchone()[0])

    workers = [threading.Thread(target=look) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    look()
    return seen


def test_a_store_opened_by_default_syncs_every_commit(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("IOP_SQLITE_SYNCHRONOUS", raising=False)
    store = SQLiteStore(tmp_path / "intake.db")
    assert synchronous_of_each_connection(store) == [FULL] * 4
    with store.transaction() as tx:
        assert tx.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_normal_is_taken_when_asked_for(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IOP_SQLITE_SYNCHRONOUS", "NORMAL")
    assert synchronous_of_each_connection(SQLiteStore(tmp_path / "intake.db")) == [NORMAL] * 4
    monkeypatch.delenv("IOP_SQLITE_SYNCHRONOUS")
    assert synchronous_of_each_connection(SQLiteStore(tmp_path / "other.db", synchronous="normal")) == [NORMAL] * 4


def test_a_store_refuses_a_setting_it_does_not_know(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IOP_SQLITE_SYNCHRONOUS", "OFF")
    with pytest.raises(ValueError, match="IOP_SQLITE_SYNCHRONOUS"):
        SQLiteStore(tmp_path / "intake.db")
    monkeypatch.delenv("IOP_SQLITE_SYNCHRONOUS")
    with pytest.raises(ValueError, match="FULL, NORMAL"):
        SQLiteStore(tmp_path / "intake.db", synchronous="OFF")
