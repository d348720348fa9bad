"""What the aftercare service serves, and the rules that run when its resources are written."""
from __future__ import annotations

from datetime import date
from typing import Any

from services.aftercare import subscription_api
from services.aftercare.handlers import AftercareHandlers
from services.aftercare.subscriptions import capability_topic_extensions
from shared.config import Settings
from shared.events.outbox import Outbox
from shared.fhir import bulk, params, uscore
from shared.fhir.everything import EVERYTHING
from shared.fhir.interactions import FhirApi
from shared.fhir.labels import label_part2
from shared.fhir.operations import OperationParameter
from shared.fhir.outcome import FhirError
from shared.fhir.registry import Operation, Registry, Repository, ResourceDef


def build_registry(settings: Settings) -> Registry:
    return build(settings)[0]


def build(settings: Settings) -> tuple[Registry, AftercareHandlers]:
    """The registry, and the handlers its operations share with the worker."""
    registry = Registry("aftercare")
    handlers = AftercareHandlers(Repository(registry), Outbox(settings.base_url))
    registry.add(ResourceDef("CarePlan", params.CAREPLAN, before_write=[label_part2],
                             doc="Aftercare (step-down) plans"))
    registry.add(ResourceDef("Goal", params.GOAL, before_write=[label_part2, uscore.refresh_narrative],
                             doc="Relapse-prevention goals"))
    registry.add(ResourceDef("ServiceRequest", params.SERVICE_REQUEST,
                             before_write=[label_part2, uscore.refresh_narrative],
                             doc="Step-down referrals to receiving providers"))
    registry.add(ResourceDef("Consent", params.CONSENT, doc="42 CFR Part 2 consents; checked at every disclosure"))
    registry.add(ResourceDef("Subscription", params.SUBSCRIPTION, before_write=[subscription_api.check_subscription],
                             after_write=[subscription_api.after_subscription],
                             before_delete=[lambda tx, current: subscription_api.check_owner(current)],
                             doc="External EHR subscriptions (Backport IG R4); topics: "
                                 + ", ".join(e["valueCanonical"] for e in capability_topic_extensions())))
    registry.add(ResourceDef("AuditEvent", params.AUDIT_EVENT, read_only=True,
                             doc="Every delivery attempt: outcome and latency"))
    registry.add(ResourceDef("Provenance", params.PROVENANCE, read_only=True, doc="Every disclosure to an EHR"))
    registry.add_operation(Operation("topic-list", "Subscription", False, subscription_api.topic_list,
                                     doc="The subscription topics", method="GET"))
    registry.add_operation(Operation("status", "Subscription", True, subscription_api.status, method="GET"))
    registry.add_operation(Operation("status", "Subscription", False, subscription_api.statuses, method="GET",
                                     doc="The status of the Subscriptions named by id (any number), or of all "
                                         "the caller may see", parameters=subscription_api.STATUSES))
    registry.add_operation(Operation("events", "Subscription", True, subscription_api.events, method="GET",
                                     doc="Replay notifications by event number (eventsSinceNumber, "
                                         "eventsUntilNumber)", parameters=subscription_api.EVENTS))
    registry.add_operation(Operation("resend", "Subscription", True, subscription_api.resend,
                                     doc="Queue delivered events again by number", parameters=subscription_api.RESEND))

    def sweep(api: FhirApi, body: dict | None = None, **_: Any) -> tuple[int, dict]:
        day = next((p["valueDate"] for p in (body or {}).get("parameter", []) if p["name"] == "date"), None)
        try:
            today = date.fromisoformat(day) if day else handlers.clock().date()
        except ValueError:  # a valid FHIR date may be partial (2025, 2025-03): a sweep needs the day
            raise FhirError.single(400, "date must be a full FHIR date (YYYY-MM-DD)",
                                   expression="Parameters.parameter.where(name='date')") from None
        with api.store.transaction() as tx:
            raised = handlers.sweep_missed(tx, today)
        return 200, {"resourceType": "Parameters", "parameter": [{"name": "missed", "valueInteger": raised}]}

    registry.add_operation(Operation("sweep-checkins", "CarePlan", False, sweep,
                                     doc="Raise iop.aftercare.checkin-missed for windows passed as of `date`",
                                     parameters=(OperationParameter("date", ("valueDate",)),)))
    for operation in (EVERYTHING, *bulk.operations(groups=False)):
        registry.add_operation(operation)
    return registry, handlers
