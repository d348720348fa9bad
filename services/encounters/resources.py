"""What the encounters service serves, and the session workflow that guards every Encounter write."""
from __future__ import annotations

from services.encounters.handlers import EncounterHandlers
from shared.config import Settings
from shared.events.outbox import Outbox
from shared.fhir import bulk, params, uscore
from shared.fhir.everything import EVERYTHING
from shared.fhir.labels import label_part2
from shared.fhir.operations import OperationParameter as P
from shared.fhir.registry import Operation, Registry, Repository, ResourceDef

GROUP_ATTENDANCE = (
    P("group", ("valueString",), 1), P("start", ("valueDateTime",), 1), P("end", ("valueDateTime",), 1),
    P("virtual", ("valueBoolean",)), P("practitioner", ("valueReference",)),
    P("attendee", min=1, max=None, parts=(P("patient", ("valueReference",), 1), P("attendance", ("valueCode",), 1),
                                          P("episode", ("valueReference",)))))


def build_registry(settings: Settings) -> Registry:
    registry = Registry("encounters")
    handlers = EncounterHandlers(Repository(registry), Outbox(settings.base_url),
                                 weeks_ahead=settings.schedule_weeks, program_tz=settings.program_tz)
    registry.add(ResourceDef("Encounter", params.ENCOUNTER,
                             before_write=[label_part2, handlers.check_workflow, uscore.refresh_narrative],
                             after_write=[handlers.announce],
                             doc="Therapy, psychoeducation and check-in sessions; status planned → arrived → "
                                 "in-progress → finished, or cancelled with a reason (no-show among them)"))
    registry.add_operation(Operation("record-group-attendance", "Encounter", False, handlers.record_group,
                                     doc="One Encounter per attendee of a group session, in one transaction",
                                     parameters=GROUP_ATTENDANCE))
    for operation in (EVERYTHING, *bulk.operations(groups=False)):
        registry.add_operation(operation)
    return registry
