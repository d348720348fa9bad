"""What the careplan service serves, and the rules that run when its resources are written."""
from __future__ import annotations

from services.careplan.handlers import CarePlanHandlers
from shared.config import Settings
from shared.events.outbox import Outbox
from shared.fhir import bulk, params, uscore
from shared.fhir.everything import EVERYTHING
from shared.fhir.labels import label_part2
from shared.fhir.operations import OperationParameter
from shared.fhir.registry import Operation, Registry, Repository, ResourceDef


def build_registry(settings: Settings) -> Registry:
    registry = Registry("careplan")
    handlers = CarePlanHandlers(Repository(registry), Outbox(settings.base_url))
    registry.add(ResourceDef("EpisodeOfCare", params.EPISODE_OF_CARE, before_write=[label_part2],
                             doc="One IOP episode (ASAM 2.1) per admission"))
    registry.add(ResourceDef("CarePlan", params.CAREPLAN, before_write=[label_part2, handlers.check_revision],
                             after_write=[handlers.on_careplan_written],
                             doc="The personalised IOP plan; a PUT is a clinician's revision (reason in "
                                 "CarePlan.note) and emits iop.careplan.revised"))
    registry.add(ResourceDef("Goal", params.GOAL, before_write=[label_part2, uscore.refresh_narrative]))
    registry.add(ResourceDef("Task", params.TASK, before_write=[label_part2],
                             doc="Plan reviews the care team is asked for (missed sessions, worsening scores)"))
    registry.add_operation(Operation("graduate", "CarePlan", True, handlers.graduate,
                                     doc="Check the graduation criteria; complete the plan, episode and goals. "
                                         "Parameters: override-reason (valueString) for a clinician's override.",
                                     parameters=(OperationParameter("override-reason", ("valueString",)),)))
    for operation in (EVERYTHING, *bulk.operations(groups=False)):
        registry.add_operation(operation)
    return registry
