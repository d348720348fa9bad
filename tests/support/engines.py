"""The store engines the replica tests run on, and a fresh store locator of each for one test."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.fhir.store import SQLiteStore, Store

ENGINES = ("sqlite",)


def open_locator(locator: str) -> Store:
    return SQLiteStore(locator)


def fresh_locator(engine: str, tmp_path: Path, request: pytest.FixtureRequest, name: str = "store") -> Iterator[str]:
    """A new empty store's locator: a SQLite file under tmp_path."""
    yield str(tmp_path / f"{name}.db")
