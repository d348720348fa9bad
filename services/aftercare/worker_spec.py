"""The aftercare worker: consumes the care events, sweeps check-ins, and dispatches EHR deliveries."""
from __future__ import annotations

from datetime import timedelta

from services.aftercare.backoff import RetryPolicy
from services.aftercare.delivery import Dispatcher
from services.aftercare.resources import build
from services.aftercare.subscriptions import TOPICS_BY_EVENT
from shared.config import Settings
from shared.events.catalogue import AFTERCARE, CAREPLAN, ENCOUNTER, INTAKE
from shared.events.outbox import Outbox
from shared.events.worker import WorkerSpec
from shared.fhir.registry import Repository
from shared.fhir.store import open_store

TOPICS = [INTAKE, CAREPLAN, ENCOUNTER, AFTERCARE]
# What aftercare acts on: its own effects, and what EHRs can subscribe to (not, say, every planned session).
HANDLED = sorted({"iop.careplan.graduated", "iop.encounter.finished", "iop.assessment.completed",
                  "iop.intake.received", *TOPICS_BY_EVENT})


def worker_spec(settings: Settings) -> WorkerSpec:
    store = open_store(settings.database)
    registry, handlers = build(settings)
    policy = RetryPolicy(settings.delivery_backoff_base_s, settings.delivery_backoff_cap_s,
                         timedelta(hours=settings.delivery_give_up_hours))
    dispatcher = Dispatcher(store, Repository(registry), Outbox(settings.base_url), settings.base_url, policy,
                            claim_s=settings.work_claim_s)

    def sweep() -> None:
        with store.transaction() as tx:
            handlers.sweep_missed(tx, handlers.clock().date())

    return WorkerSpec(settings, store, topics=TOPICS, handlers={t: handlers.handle for t in HANDLED},
                      jobs=[(float(settings.checkin_sweep_s), sweep)], loops=[dispatcher.run])
