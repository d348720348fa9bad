"""What the intake service serves, and the rules that run when its resources are written."""
from __future__ import annotations

from services.intake.handlers import IntakeHandlers
from shared.config import Settings
from shared.events.outbox import Outbox
from shared.fhir import bulk, params
from shared.fhir.everything import EVERYTHING
from shared.fhir.labels import label_part2
from shared.fhir.partners import PartnerAccess
from shared.fhir.registry import Registry, Repository, ResourceDef

# A referral partner reads and writes only what it submitted of these types; it may read the catalogue too.
OWN = PartnerAccess.OWN


def build_registry(settings: Settings) -> Registry:
    registry = Registry("intake", partners=True)  # referral partners submit here, and only here
    handlers = IntakeHandlers(Repository(registry), Outbox(settings.base_url))
    registry.add(ResourceDef("Patient", params.PATIENT, natural_key="identifier", partner=OWN,
                             doc="Patients, matched by the referral partner's identifier"))
    registry.add(ResourceDef("Questionnaire", params.QUESTIONNAIRE, read_only=True, partner=PartnerAccess.READ,
                             doc="The IOP intake and re-assessment questionnaires (read-only catalogue)"))
    registry.add(ResourceDef("QuestionnaireResponse", params.QUESTIONNAIRE_RESPONSE,
                             before_write=[label_part2, handlers.check_response], after_write=[handlers.on_response],
                             partner=OWN,
                             doc="Intake and re-assessment responses; a completed one is scored and triaged"))
    registry.add(ResourceDef("Observation", params.OBSERVATION, before_write=[label_part2], partner=OWN,
                             doc="Instrument scores and the level-of-care recommendation"))
    registry.add(ResourceDef("ServiceRequest", params.SERVICE_REQUEST, before_write=[label_part2], partner=OWN,
                             doc="Incoming referrals to the IOP"))
    registry.add(ResourceDef("Flag", params.FLAG, before_write=[label_part2], partner=OWN,
                             doc="Safety flags raised by intake"))
    registry.add(ResourceDef("Group", params.GROUP, doc="Cohorts of patients (Group.member); Group/{id}/$export "
                                                         "exports their compartments"))
    for operation in (EVERYTHING, *bulk.operations(groups=True)):
        registry.add_operation(operation)
    return registry
