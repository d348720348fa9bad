"""Which failures of a handler are the event's fault, which the moment's, and which the handler's own."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from kafka.errors import KafkaConnectionError, KafkaTimeoutError

from shared.events.failures import HANDLER_ERROR, POISON, REFUSED, UNAVAILABLE, PoisonMessage, kind_of
from shared.fhir.outcome import FhirError


def sqlite_error(tmp_path: Path, busy: bool) -> sqlite3.OperationalError:
    """A real error from SQLite: a write lock held by another connection, or a query of a table that is not there."""
    holder = sqlite3.connect(tmp_path / "db", timeout=0, isolation_level=None)
    holder.execute("CREATE TABLE IF NOT EXISTS t (a)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(tmp_path / "db", timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE" if busy else "SELECT * FROM missing")
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        other.close()
        holder.close()
    raise AssertionError("SQLite raised nothing")


def test_the_events_own_faults_are_poison_or_refused() -> None:
    assert kind_of(PoisonMessage("never")) == POISON
    assert kind_of(FhirError.single(422, "invalid")) == REFUSED


@pytest.mark.parametrize("error", [ConnectionError("refused"), TimeoutError("slow"), KafkaConnectionError(),
                                   KafkaTimeoutError("no metadata")], ids=type)
def test_a_dependency_that_is_down_is_unavailable(error: Exception) -> None:
    assert kind_of(error) == UNAVAILABLE


def test_a_busy_store_is_unavailable_but_a_query_of_a_missing_table_is_the_handlers_error(tmp_path: Path) -> None:
    assert kind_of(sqlite_error(tmp_path, busy=True)) == UNAVAILABLE
    assert kind_of(sqlite_error(tmp_path, busy=False)) == HANDLER_ERROR


@pytest.mark.parametrize("error", [TypeError("x"), KeyError("x"), ValueError("x"), AttributeError("x"),
                                   IndexError("x"), RuntimeError("x"), sqlite3.IntegrityError("UNIQUE")], ids=type)
def test_every_other_exception_is_the_handlers_error(error: Exception) -> None:
    assert kind_of(error) == HANDLER_ERROR
