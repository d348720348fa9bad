"""What the intake service serves."""
from __future__ import annotations

from shared.config import Settings
from shared.fhir import params
from shared.fhir.registry import Registry, ResourceDef


def build_registry(settings: Settings) -> Registry:
    registry = Registry("intake")
    registry.add(ResourceDef("Patient", params.PATIENT, doc="Patients, matched by the referral partner's identifier"))
    registry.add(ResourceDef("Questionnaire", params.QUESTIONNAIRE, read_only=True,
                             doc="The IOP intake and re-assessment questionnaires (read-only catalogue)"))
    registry.add(ResourceDef("QuestionnaireResponse", params.QUESTIONNAIRE_RESPONSE))
    registry.add(ResourceDef("Observation", params.OBSERVATION, doc="Instrument scores and the level-of-care "
                                                                     "recommendation"))
    registry.add(ResourceDef("ServiceRequest", params.SERVICE_REQUEST, doc="Incoming referrals to the IOP"))
    registry.add(ResourceDef("Flag", params.FLAG, doc="Safety flags raised by intake"))
    return registry
