"""How the careplan service reacts to events."""
from __future__ import annotations

from shared.config import Settings
from shared.events.worker import WorkerSpec
from shared.fhir.store import SQLiteStore


def worker_spec(settings: Settings) -> WorkerSpec:
    return WorkerSpec(settings, SQLiteStore(settings.database))
