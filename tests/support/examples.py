"""Realistic minimal resources of every type the suite serves, one fixture module for all tests.

Each example is what an EHR or a referral partner would really send, and what the services'
business rules (once they are wired as hooks) accept without side effects: an Encounter is a
planned session, a QuestionnaireResponse is still in progress (so it is not scored), a
CarePlan is a draft. `minimal(type, patient_id)` returns a fresh dict each call.

`SHAPES` says, per type, which search parameter carries its status, a second status a client
may create it with, which element holds a required-binding code and which holds a date, so
that the conformance suite can vary or break them without knowing each type by heart.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared import codes

PARTNER_MRN = "https://referrals.example.org/fhir/NamingSystem/mrn"
TOPIC = "https://iop-suite.org/fhir/SubscriptionTopic/careplan-created"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
IOP_INTAKE = "https://iop-suite.org/fhir/Questionnaire/iop-intake"


def _patient(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Patient",
            "identifier": [{"system": PARTNER_MRN, "value": f"MRN-{patient_id}"}],
            "name": [{"family": "Rivera", "given": ["Alex"]}], "gender": "female", "birthDate": "1988-04-12"}


def _questionnaire_response(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "QuestionnaireResponse", "questionnaire": IOP_INTAKE, "status": "in-progress",
            "subject": {"reference": f"Patient/{patient_id}"}, "authored": "2025-03-03T09:30:00Z",
            "item": [{"linkId": "referral", "item": [{"linkId": "referral-source", "answer": [{"valueCoding": {
                "system": "https://iop-suite.org/fhir/CodeSystem/intake-answer", "code": "primary-care",
                "display": "Primary care"}}]}]}]}


def _observation(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": codes.OBSERVATION_CATEGORY, "code": "survey"}]}],
            "code": {"coding": [{"system": codes.LOINC, "code": codes.PHQ9_TOTAL,
                                 "display": "Patient Health Questionnaire 9 item (PHQ-9) total score"}]},
            "subject": {"reference": f"Patient/{patient_id}"}, "effectiveDateTime": "2025-03-03T09:45:00Z",
            "valueInteger": 14}


def _service_request(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "code": {"coding": [{"system": codes.SNOMED, "code": "1259220000",
                                 "display": "Intensive outpatient program"}],
                     "text": "Referral to the Intensive Outpatient Program"},
            "subject": {"reference": f"Patient/{patient_id}"}, "authoredOn": "2025-03-01"}


def _flag(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Flag", "status": "active",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/flag-category",
                                      "code": "safety"}]}],
            "code": {"text": "Suicide risk: review before each session"},
            "subject": {"reference": f"Patient/{patient_id}"}, "period": {"start": "2025-03-03"}}


def _episode_of_care(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "EpisodeOfCare", "status": "active",
            "type": [{"coding": [{"system": codes.IOP_CAREPLAN, "code": "iop-treatment-plan"}]}],
            "patient": {"reference": f"Patient/{patient_id}"}, "period": {"start": "2025-03-04"}}


def _care_plan(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "CarePlan", "status": "draft", "intent": "plan",
            "category": [{"coding": [{"system": codes.IOP_CAREPLAN, "code": "iop-treatment-plan"}]}],
            "title": "IOP treatment plan", "subject": {"reference": f"Patient/{patient_id}"},
            "period": {"start": "2025-03-04"}, "created": "2025-03-04"}


def _goal(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Goal", "lifecycleStatus": "proposed",
            "description": {"text": "Attend at least 80% of scheduled group sessions"},
            "subject": {"reference": f"Patient/{patient_id}"}, "startDate": "2025-03-04"}


def _task(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order",
            "code": {"text": "Review the treatment plan"},
            "description": "Two missed group sessions this week: review attendance with the patient",
            "for": {"reference": f"Patient/{patient_id}"}, "authoredOn": "2025-03-12T08:00:00Z"}


def _encounter(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Encounter", "status": "planned",
            "class": {"system": codes.V3_ACT_CODE, "code": "AMB", "display": "ambulatory"},
            "type": [{"text": "Group therapy session"}],
            "subject": {"reference": f"Patient/{patient_id}"},
            "period": {"start": "2025-03-10T15:00:00Z", "end": "2025-03-10T18:00:00Z"}}


def _consent(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": codes.LOINC, "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient_id}"}, "dateTime": "2025-03-04T10:00:00Z",
            "policyRule": {"coding": [{"system": codes.V3_ACT_CODE, "code": "42CFRPart2"}]},
            "provision": {"type": "permit", "period": {"start": "2025-03-04"},
                          "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                                    "v3-ParticipationType", "code": "IRCP"}]},
                                     "reference": {"reference": "Organization/community-clinic"}}],
                          "purpose": [{"system": codes.V3_ACT_REASON, "code": "TREAT"}]}}


def _subscription(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Subscription",
            "meta": {"profile": [f"{BACKPORT}/backport-subscription"]},
            "status": "requested", "reason": "Notify the community clinic EHR of new IOP plans",
            "criteria": TOPIC,
            "_criteria": {"extension": [{"url": f"{BACKPORT}/backport-filter-criteria",
                                         "valueString": f"CarePlan?patient=Patient/{patient_id}"}]},
            "channel": {"type": "rest-hook", "endpoint": "https://ehr.example.org/fhir/iop-notify",
                        "payload": "application/fhir+json",
                        "_payload": {"extension": [{"url": f"{BACKPORT}/backport-payload-content",
                                                    "valueCode": "id-only"}]}},
            "end": "2026-03-04T00:00:00Z"}


def _audit_event(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "AuditEvent",
            "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110106", "display": "Export"},
            "action": "E", "period": {"start": "2025-03-04T10:00:00.000Z", "end": "2025-03-04T10:00:00.120Z"},
            "recorded": "2025-03-04T10:00:00.120Z", "outcome": "0", "outcomeDesc": "HTTP 200; 120 ms",
            "agent": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                                            "code": "datacollector"}]},
                       "who": {"display": "iop-suite aftercare"}, "requestor": False}],
            "source": {"observer": {"display": "iop-suite aftercare"}},
            "entity": [{"what": {"reference": "Subscription/community-clinic"}, "description": "notification"},
                       {"what": {"reference": f"Patient/{patient_id}"}}]}


def _provenance(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Provenance", "target": [{"reference": f"CarePlan/plan-of-{patient_id}"}],
            "recorded": "2025-03-04T10:00:00.120Z",
            "activity": {"text": "disclosure to an external EHR under 42 CFR Part 2 consent"},
            "agent": [{"who": {"display": "iop-suite aftercare"}}],
            "entity": [{"role": "source", "what": {"reference": "Subscription/community-clinic"}}]}


def _group(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Group", "type": "person", "actual": True, "name": "Tuesday evening IOP cohort",
            "member": [{"entity": {"reference": f"Patient/{patient_id}"}, "period": {"start": "2025-03-04"}}]}


def _questionnaire(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Questionnaire", "url": "https://iop-suite.org/fhir/Questionnaire/weekly-checkin",
            "version": "1.0.0", "name": "WeeklyCheckIn", "title": "IOP weekly check-in", "status": "active",
            "date": "2025-01-15",
            "subjectType": ["Patient"],
            "item": [{"linkId": "cravings", "text": "Cravings this week (0-10)", "type": "integer"}]}


EXAMPLES: dict[str, Callable[[str], dict[str, Any]]] = {
    "Patient": _patient, "Questionnaire": _questionnaire, "QuestionnaireResponse": _questionnaire_response,
    "Observation": _observation, "ServiceRequest": _service_request, "Flag": _flag,
    "EpisodeOfCare": _episode_of_care, "CarePlan": _care_plan, "Goal": _goal, "Task": _task,
    "Encounter": _encounter,
    "Group": _group, "Consent": _consent, "Subscription": _subscription, "AuditEvent": _audit_event,
    "Provenance": _provenance,
}


def minimal(resource_type: str, patient_id: str) -> dict[str, Any]:
    """A fresh, valid, realistic resource of `resource_type` about Patient/`patient_id`."""
    if resource_type not in EXAMPLES or resource_type not in SHAPES:
        raise KeyError(f"a service now serves {resource_type}: add its example and Shape to tests/support/examples.py")
    return copy.deepcopy(EXAMPLES[resource_type](patient_id))


@dataclass(frozen=True)
class Shape:
    """Where a type keeps the things the conformance suite varies."""

    status_param: str | None    # search parameter of its status (None: the type has none)
    status_element: str         # path of an element with a required binding (its status where it has one)
    other_status: str           # a second value a client may create the type with
    date_path: tuple[str | int, ...]  # a date, dateTime or instant element, as keys (and indices) from the root
    patient_param: str | None   # "subject" or "patient" when the type points at a patient


SHAPES: dict[str, Shape] = {
    "Patient": Shape(None, "gender", "male", ("birthDate",), None),
    "Questionnaire": Shape("status", "status", "draft", ("date",), None),
    "QuestionnaireResponse": Shape("status", "status", "stopped", ("authored",), "subject"),
    "Observation": Shape("status", "status", "preliminary", ("effectiveDateTime",), "subject"),
    "ServiceRequest": Shape("status", "status", "draft", ("authoredOn",), "subject"),
    "Flag": Shape("status", "status", "inactive", ("period", "start"), "subject"),
    "EpisodeOfCare": Shape("status", "status", "planned", ("period", "start"), "patient"),
    "CarePlan": Shape("status", "status", "active", ("created",), "subject"),
    "Goal": Shape("lifecycle-status", "lifecycleStatus", "active", ("startDate",), "subject"),
    "Task": Shape("status", "status", "accepted", ("authoredOn",), "patient"),
    "Encounter": Shape("status", "status", "arrived", ("period", "start"), "subject"),
    "Consent": Shape("status", "status", "proposed", ("dateTime",), "patient"),
    "Subscription": Shape("status", "status", "off", ("end",), None),
    "Group": Shape(None, "type", "device", ("member", 0, "period", "start"), None),
    "AuditEvent": Shape(None, "action", "R", ("recorded",), "patient"),
    "Provenance": Shape(None, "entity[0].role", "derivation", ("recorded",), "patient"),
}


def _steps(path: str) -> list[str | int]:
    """`entity[0].role` -> ["entity", 0, "role"]."""
    steps: list[str | int] = []
    for part in path.split("."):
        name, _, index = part.partition("[")
        steps += [name, int(index.rstrip("]"))] if index else [name]
    return steps


def status_of(resource: dict[str, Any]) -> Any:
    """The value of the coded element SHAPES names for the resource's type."""
    node: Any = resource
    for step in _steps(SHAPES[resource["resourceType"]].status_element):
        node = node[step]
    return node


def with_status(resource: dict[str, Any], value: str) -> dict[str, Any]:
    """A copy of `resource` whose status (or the element SHAPES names instead, e.g. Patient.gender) is `value`."""
    changed = copy.deepcopy(resource)
    *parents, leaf = _steps(SHAPES[resource["resourceType"]].status_element)
    node: Any = changed
    for step in parents:
        node = node[step]
    node[leaf] = value
    return changed


def with_date(resource: dict[str, Any], value: str) -> dict[str, Any]:
    """A copy of `resource` whose date element holds `value`."""
    changed = copy.deepcopy(resource)
    *parents, leaf = SHAPES[resource["resourceType"]].date_path
    node = changed
    for key in parents:
        node = node[key]
    node[leaf] = value
    return changed
