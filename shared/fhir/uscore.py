"""US Core 6.1.0: the profiles the suite's resources claim, and the narrative (`text`) generated for them.

A narrative says only what the resource itself says (codes, statuses, dates, values), never who the patient
is: it travels with the resource to every EHR the resource is disclosed to. Each type that a service builds
and claims a profile for gets its summary here; CarePlans write their own (services/*/plan builders).
"""
from __future__ import annotations

from html import escape
from typing import Any

VERSION = "6.1.0"
IMPLEMENTATION_GUIDE = f"http://hl7.org/fhir/us/core/ImplementationGuide/hl7.fhir.us.core|{VERSION}"
_BASE = "http://hl7.org/fhir/us/core/StructureDefinition"
PATIENT = f"{_BASE}/us-core-patient"
SCREENING_ASSESSMENT = f"{_BASE}/us-core-observation-screening-assessment"
CAREPLAN = f"{_BASE}/us-core-careplan"
GOAL = f"{_BASE}/us-core-goal"
ENCOUNTER = f"{_BASE}/us-core-encounter"
SERVICE_REQUEST = f"{_BASE}/us-core-servicerequest"
QUESTIONNAIRE_RESPONSE = f"{_BASE}/us-core-questionnaireresponse"

# What a service lists as supportedProfile for a type it serves (shared/fhir/capability.py).
SUPPORTED = {"Patient": (PATIENT,), "Observation": (SCREENING_ASSESSMENT,), "CarePlan": (CAREPLAN,),
             "Goal": (GOAL,), "Encounter": (ENCOUNTER,), "ServiceRequest": (SERVICE_REQUEST,),
             "QuestionnaireResponse": (QUESTIONNAIRE_RESPONSE,)}
XHTML = "http://www.w3.org/1999/xhtml"


def supported_profiles(resource_type: str) -> list[str]:
    return list(SUPPORTED.get(resource_type, ()))


def claim(resource: dict[str, Any], profile: str) -> dict[str, Any]:
    """Adds the profile to meta.profile (once), keeping the rest of meta; returns the resource."""
    profiles = resource.setdefault("meta", {}).setdefault("profile", [])
    if profile not in profiles:
        profiles.append(profile)
    return resource


def claims_us_core(resource: dict[str, Any]) -> bool:
    return any(p.partition("|")[0].startswith(_BASE + "/") for p in (resource.get("meta") or {}).get("profile", []))


def div(*paragraphs: str) -> dict[str, str]:
    """A generated narrative from plain-text paragraphs (escaped here)."""
    body = "".join(f"<p>{escape(p)}</p>" for p in paragraphs if p)
    return {"status": "generated", "div": f'<div xmlns="{XHTML}">{body}</div>'}


def narrate(resource: dict[str, Any]) -> dict[str, Any]:
    """Sets `text` to the generated summary of a type summarised here; returns the resource."""
    summary = _SUMMARIES.get(resource.get("resourceType", ""))
    if summary is not None:
        resource["text"] = div(*summary(resource))
    return resource


def refresh_narrative(tx: object, resource: dict[str, Any], previous: object) -> None:
    """A before_write rule: a resource that claims US Core keeps a generated narrative in step with what it
    says (a status changed by a later write). A narrative that a client authored (status other than
    generated) is left alone."""
    if claims_us_core(resource) and (resource.get("text") or {}).get("status", "generated") == "generated":
        narrate(resource)


def _concept(concept: dict[str, Any] | None, fallback: str = "") -> str:
    concept = concept or {}
    return concept.get("text") or next((c["display"] for c in concept.get("coding", []) if c.get("display")),
                                       None) or next((c["code"] for c in concept.get("coding", []) if c.get("code")),
                                                     fallback)


def _period(period: dict[str, Any] | None) -> str:
    period = period or {}
    if "start" in period and "end" in period:
        return f"from {period['start']} to {period['end']}"
    return f"from {period['start']}" if "start" in period else (f"until {period['end']}" if "end" in period else "")


def _observation(obs: dict[str, Any]) -> list[str]:
    value = next((str(obs[k]) for k in ("valueInteger", "valueString", "valueBoolean") if k in obs), None)
    if "valueQuantity" in obs:
        value = f"{obs['valueQuantity'].get('value')} {obs['valueQuantity'].get('unit', '')}".strip()
    if "valueCodeableConcept" in obs:
        value = _concept(obs["valueCodeableConcept"])
    result = f"{_concept(obs.get('code'), 'Observation')}: {value if value is not None else 'no value'}"
    interpretation = ", ".join(_concept(i) for i in obs.get("interpretation", []))
    return [f"{result}{f' ({interpretation})' if interpretation else ''}; {obs.get('status', '')}, "
            f"{obs.get('effectiveDateTime', 'time not recorded')}.",
            *(note["text"] for note in obs.get("note", []) if note.get("text"))]


def _goal(goal: dict[str, Any]) -> list[str]:
    achievement = _concept(goal.get("achievementStatus"))
    targets = []
    for target in goal.get("target", []):
        measure = _concept(target.get("measure"))
        amount = target.get("detailQuantity") or {}
        wanted = f"{amount.get('comparator', '')}{amount['value']} {amount.get('unit', '')}".strip() \
            if "value" in amount else ""
        due = f"by {target['dueDate']}" if "dueDate" in target else ""
        targets.append(" ".join(p for p in (measure, wanted, due) if p))
    return [f"Goal: {_concept(goal.get('description'), 'not described')}.",
            f"{goal.get('lifecycleStatus', '')}{f', {achievement}' if achievement else ''}"
            f"{', started ' + goal['startDate'] if 'startDate' in goal else ''}.",
            f"Target: {'; '.join(targets)}." if targets else ""]


def _encounter(encounter: dict[str, Any]) -> list[str]:
    kinds = ", ".join(_concept(t) for t in encounter.get("type", [])) or "Encounter"
    setting = (encounter.get("class") or {}).get("display") or (encounter.get("class") or {}).get("code", "")
    return [f"{kinds}: {encounter.get('status', '')}, {setting} {_period(encounter.get('period'))}".rstrip() + "."]


def _service_request(request: dict[str, Any]) -> list[str]:
    repeat = (request.get("occurrenceTiming") or {}).get("repeat") or {}
    every = f"{repeat['frequency']} per {repeat.get('period', 1)} {repeat.get('periodUnit', '')}" \
        if "frequency" in repeat else ""
    when = ", ".join(p for p in (every, _period(repeat.get("boundsPeriod"))) if p)
    return [f"{_concept(request.get('code'), 'Service request')}: {request.get('status', '')} "
            f"{request.get('intent', '')}{', ' + when if when else ''}"
            f"{', authored ' + request['authoredOn'] if 'authoredOn' in request else ''}."]


_SUMMARIES = {"Observation": _observation, "Goal": _goal, "Encounter": _encounter,
              "ServiceRequest": _service_request}
