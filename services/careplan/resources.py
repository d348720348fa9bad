"""What the careplan service serves."""
from __future__ import annotations

from shared.config import Settings
from shared.fhir import params
from shared.fhir.registry import Registry, ResourceDef


def build_registry(settings: Settings) -> Registry:
    registry = Registry("careplan")
    registry.add(ResourceDef("EpisodeOfCare", params.EPISODE_OF_CARE))
    registry.add(ResourceDef("CarePlan", params.CAREPLAN))
    registry.add(ResourceDef("Goal", params.GOAL))
    return registry
