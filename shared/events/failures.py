"""Why an event could not be applied: the kinds of dead letter, and which failures another attempt may cure.

Each record in `<topic>.dlq` carries its kind in the `dlq_kind` header:

| kind | cause | retried first |
|---|---|---|
| `invalid-envelope` | the record is not an event of the contract (CloudEvents headers, FHIR Bundle) | no |
| `poison` | the handler's verdict that the event can never be applied (`PoisonMessage`) | no |
| `refused` | the handler refused the event's content on purpose (a `FhirError`) | no |
| `unavailable` | the store stayed busy or a dependency down through every attempt | yes |

A store that cannot be reached at all (`StoreUnavailable`: PostgreSQL down, a pool or statement timeout) is
no dead letter of any kind: the runner stops, commits nothing, backs off and applies the same records again.
| `handler-error` | any other exception: a defect of the handler, not of the event | yes |

The first three are the event's fault: the DLQ is their place. The last two need a look, and a replay once
their cause is gone; a handler error is also logged at error level with its stack and counted.
"""
from __future__ import annotations

import sqlite3

from kafka.errors import KafkaError

from shared.fhir.outcome import FhirError
from shared.fhir.store import Store, StoreUnavailable, Transaction

INVALID_ENVELOPE, POISON, REFUSED, UNAVAILABLE, HANDLER_ERROR = (
    "invalid-envelope", "poison", "refused", "unavailable", "handler-error")
KINDS = (INVALID_ENVELOPE, POISON, REFUSED, UNAVAILABLE, HANDLER_ERROR)
CONTENT_KINDS = frozenset({INVALID_ENVELOPE, POISON, REFUSED})  # dead-lettered at once: retrying cannot help
HANDLER_ERROR_LOG = "handler error"  # the message of the error line logged for each one
_COUNT = "handler-errors:"  # store key `handler-errors:<group>:<event type>`: how many, for /metrics and status
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


class PoisonMessage(Exception):
    """A handler's verdict that an event can never be applied as it is: no retry, straight to the DLQ."""


def kind_of(exc: BaseException) -> str:
    if isinstance(exc, PoisonMessage):
        return POISON
    if isinstance(exc, StoreUnavailable):  # a FhirError (503) for the web; for a consumer, the moment's fault
        return UNAVAILABLE
    if isinstance(exc, FhirError):
        return REFUSED
    if isinstance(exc, sqlite3.OperationalError):
        # Busy or locked is the moment's fault; any other OperationalError (no such table ...) is the code's.
        return UNAVAILABLE if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (_SQLITE_BUSY, _SQLITE_LOCKED) \
            else HANDLER_ERROR
    if isinstance(exc, (OSError, KafkaError)):  # a connection refused or timed out (requests' errors among them)
        return UNAVAILABLE
    return HANDLER_ERROR


def count_handler_error(tx: Transaction, group: str, event_type: str) -> None:
    key = f"{_COUNT}{group}:{event_type}"
    tx.put_value(key, str(int(tx.get_value(key) or 0) + 1))


def handler_errors(store: Store) -> dict[tuple[str, str], int]:
    """(group, event type) → how many handler errors the service's consumers have met."""
    counts = {}
    for name, value in store.values_with_prefix(_COUNT):
        group, _, event_type = name.removeprefix(_COUNT).partition(":")
        counts[(group, event_type)] = int(value)
    return counts
