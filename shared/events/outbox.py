"""The producer side of a service: events written into the store transaction of their cause."""
from __future__ import annotations

from shared.events.envelope import build_event
from shared.fhir.store import Stored, Transaction


class Outbox:
    """Adds events to the outbox of the transaction that makes the change they announce."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def emit(self, tx: Transaction, type_name: str, patient_id: str, focus: Stored | dict,
             context: list[dict] = ()) -> None:
        resource = focus.resource if isinstance(focus, Stored) else focus
        tx.add_event(build_event(type_name, self.base_url, patient_id, resource, list(context)))
