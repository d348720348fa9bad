"""IOP session kinds and the Encounters that record them (DOMAIN.md 3.1, 3.2; docs/careplan-rules.md, "Sessions").

A group session is recorded as one Encounter per patient, tied together only by a group-session identifier:
42 CFR Part 2 does not allow one patient's record to reveal who else attended.
"""
from __future__ import annotations

import copy
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.encounters.workflow import check_transition, with_cancellation_reason
from shared import codes
from shared.fhir import uscore

CAREPLAN_ACTIVITY = f"{codes.IOP_IDENTIFIER}/careplan-activity"  # value "<CarePlan id>/<activity index>"
GROUP_SESSION = f"{codes.IOP_IDENTIFIER}/group-session"
ATTENDANCE = {"attended": "finished", "no-show": "cancelled", "excused": "cancelled"}
_EXCUSE = {"no-show": "no-show", "excused": "patient-cancelled"}
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, GROUP_SESSION)


@dataclass(frozen=True)
class SessionKind:
    key: str
    text: str
    codings: tuple[dict[str, str], ...]  # Encounter.type: CPT/HCPCS first, then SNOMED (CPT carries no display)
    service_type: dict[str, str]         # service-type code (DOMAIN.md 3.2)


def _code(system: str, code: str, display: str | None = None) -> dict[str, str]:
    return {"system": system, "code": code, **({"display": display} if display else {})}


KINDS = {k.key: k for k in (
    SessionKind("individual", "Individual psychotherapy", (_code(codes.CPT, "90834"),
                _code(codes.SNOMED, "18512000", "Individual psychotherapy")),
                _code(codes.SERVICE_TYPE, "105", "Drug and/or Alcohol Counselling")),
    SessionKind("group", "Group psychotherapy", (_code(codes.CPT, "90853"),
                _code(codes.SNOMED, "76168009", "Group psychotherapy")),
                _code(codes.SERVICE_TYPE, "108", "Non-resid. Alcohol/Drug Treatment")),
    SessionKind("family", "Family psychotherapy with patient", (_code(codes.CPT, "90847"),
                _code(codes.SNOMED, "108313002", "Family psychotherapy procedure")),
                _code(codes.SERVICE_TYPE, "71", "Family Counselling/Therapy")),
    SessionKind("psychoeducation", "Psychoeducation", (_code(codes.HCPCS, "H2027", "Psychoeducational service, per 15 "
                "minutes"),), _code(codes.SERVICE_TYPE, "614", "Development-Life Skills")),
    SessionKind("check-in", "IOP check-in", (_code(codes.HCPCS, "H0004", "Behavioral health counseling and therapy, "
                "per 15 minutes"),), _code(codes.SERVICE_TYPE, "105", "Drug and/or Alcohol Counselling")),
)}
ENCOUNTER_CLASS = {False: _code(codes.V3_ACT_CODE, "AMB", "ambulatory"),
                   True: _code(codes.V3_ACT_CODE, "VR", "virtual")}


@dataclass(frozen=True)
class Attendee:
    patient_id: str
    attendance: str                # attended | no-show | excused
    episode_id: str | None = None


def kind_of(codings: list[dict[str, Any]]) -> str | None:
    """The session kind whose billing code (CPT/HCPCS) is among the codings, e.g. a CarePlan activity's code."""
    wanted = {(c.get("system"), c.get("code")) for c in codings}
    return next((k.key for k in KINDS.values() if (k.codings[0]["system"], k.codings[0]["code"]) in wanted), None)


def build_encounter(kind: str, patient_id: str, *, start: datetime, end: datetime | None = None,
                    status: str = "planned", cancel_reason: str | None = None, encounter_id: str | None = None,
                    virtual: bool = False, episode_id: str | None = None, activity: tuple[str, int] | None = None,
                    session_type: dict[str, Any] | None = None, practitioner_id: str | None = None) -> dict[str, Any]:
    """One patient's session as an Encounter; `activity` is (CarePlan id, activity index) of the plan it delivers.

    session_type replaces the kind's Encounter.type, e.g. with the activity's own code (a psychoeducation module).
    Raises ValueError for a combination the workflow would refuse (a finished session without an end, ...).
    """
    if kind not in KINDS or (start.tzinfo is None or (end is not None and end.tzinfo is None)):
        raise ValueError(f"unknown session kind {kind!r} or a session time without a time zone")
    session = KINDS[kind]
    encounter = {"resourceType": "Encounter", **({"id": encounter_id} if encounter_id else {}),
                 "meta": {"security": copy.deepcopy(codes.PART2_LABELS), "profile": [uscore.ENCOUNTER]},
                 "status": status, "class": dict(ENCOUNTER_CLASS[virtual]),
                 "type": [copy.deepcopy(session_type) if session_type else _type(session)],
                 "serviceType": {"coding": [dict(session.service_type)]},
                 "subject": {"reference": f"Patient/{patient_id}"},
                 "period": {"start": start.isoformat(), **({"end": end.isoformat()} if end else {})}}
    _link(encounter, episode_id, activity, practitioner_id)
    if status == "cancelled":
        encounter = with_cancellation_reason(encounter, cancel_reason or "")
    issues = check_transition(None, encounter)
    if issues:
        raise ValueError("; ".join(i.diagnostics for i in issues))
    return uscore.narrate(encounter)


def group_attendance(group_session_id: str, attendees: list[Attendee], *, start: datetime, end: datetime,
                     virtual: bool = False, practitioner_id: str | None = None) -> list[dict[str, Any]]:
    """One Encounter per attendee, each naming only its own patient; all carry the group-session identifier."""
    patients = [a.patient_id for a in attendees]
    if len(set(patients)) != len(patients):
        raise ValueError("a patient is listed twice for one group session")
    if any(re.search(rf"(?<![A-Za-z0-9]){re.escape(p)}(?![A-Za-z0-9])", group_session_id) for p in patients):
        raise ValueError("the group-session id must not contain a patient id (every attendee's record carries it): "
                         "use an opaque id")
    encounters = []
    for attendee in attendees:
        if attendee.attendance not in ATTENDANCE:
            raise ValueError(f"attendance must be one of {', '.join(ATTENDANCE)}, not {attendee.attendance!r}")
        encounter = build_encounter(
            "group", attendee.patient_id, start=start, end=end, status=ATTENDANCE[attendee.attendance],
            cancel_reason=_EXCUSE.get(attendee.attendance), virtual=virtual, episode_id=attendee.episode_id,
            encounter_id=str(uuid.uuid5(_ID_NAMESPACE, f"{group_session_id}/{attendee.patient_id}")),
            practitioner_id=practitioner_id)
        encounter["identifier"] = [{"system": GROUP_SESSION, "value": group_session_id}]
        encounters.append(encounter)
    return encounters


def _type(session: SessionKind) -> dict[str, Any]:
    return {"coding": [dict(c) for c in session.codings], "text": session.text}


def _link(encounter: dict[str, Any], episode_id: str | None, activity: tuple[str, int] | None,
          practitioner_id: str | None) -> None:
    if episode_id:
        encounter["episodeOfCare"] = [{"reference": f"EpisodeOfCare/{episode_id}"}]
    if activity:
        # R4 basedOn targets ServiceRequest: the plan's activities are inline ServiceRequest details, so this is a
        # logical reference by identifier, "<CarePlan id>/<activity index>".
        encounter["basedOn"] = [{"type": "ServiceRequest", "identifier": {
            "system": CAREPLAN_ACTIVITY, "value": f"{activity[0]}/{activity[1]}"}}]
    if practitioner_id:
        encounter["participant"] = [{"individual": {"reference": f"Practitioner/{practitioner_id}"}}]
