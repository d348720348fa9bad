"""What the aftercare service serves."""
from __future__ import annotations

from shared.config import Settings
from shared.fhir import params
from shared.fhir.registry import Registry, ResourceDef


def build_registry(settings: Settings) -> Registry:
    registry = Registry("aftercare")
    registry.add(ResourceDef("CarePlan", params.CAREPLAN, doc="Aftercare (step-down) plans"))
    registry.add(ResourceDef("ServiceRequest", params.SERVICE_REQUEST, doc="Step-down referrals"))
    registry.add(ResourceDef("Consent", params.CONSENT, doc="42 CFR Part 2 disclosure consents"))
    registry.add(ResourceDef("Subscription", params.SUBSCRIPTION, doc="External EHR subscriptions"))
    return registry
