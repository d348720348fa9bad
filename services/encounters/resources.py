"""What the encounters service serves."""
from __future__ import annotations

from shared.config import Settings
from shared.fhir import params
from shared.fhir.registry import Registry, ResourceDef


def build_registry(settings: Settings) -> Registry:
    registry = Registry("encounters")
    registry.add(ResourceDef("Encounter", params.ENCOUNTER))
    return registry
