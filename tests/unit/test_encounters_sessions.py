"""Session kinds and the Encounters that record them; group sessions under 42 CFR Part 2."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from fhir.resources.R4B.encounter import Encounter

from services.encounters.sessions import (
    CAREPLAN_ACTIVITY,
    GROUP_SESSION,
    Attendee,
    build_encounter,
    group_attendance,
    kind_of,
)
from services.encounters.workflow import cancellation_reason
from shared import codes

START = datetime(2025, 3, 3, 14, 0, tzinfo=UTC)
END = START + timedelta(hours=3)


@pytest.mark.parametrize("kind, billing, snomed, service_type", [
    ("individual", (codes.CPT, "90834"), "18512000", "105"),
    ("group", (codes.CPT, "90853"), "76168009", "108"),
    ("family", (codes.CPT, "90847"), "108313002", "71"),
    ("psychoeducation", (codes.HCPCS, "H2027"), None, "614"),
    ("check-in", (codes.HCPCS, "H0004"), None, "105"),
])
def test_each_session_kind_is_coded_for_billing_and_service_type(kind, billing, snomed, service_type):
    encounter = build_encounter(kind, "pat-1", start=START)
    coded = [(c["system"], c["code"]) for c in encounter["type"][0]["coding"]]
    assert coded[0] == billing
    assert ((codes.SNOMED, snomed) in coded) if snomed else len(coded) == 1
    assert encounter["serviceType"]["coding"][0] == {**encounter["serviceType"]["coding"][0],
                                                     "system": codes.SERVICE_TYPE, "code": service_type}
    assert kind_of(encounter["type"][0]["coding"]) == kind
    Encounter.model_validate(encounter)


@pytest.mark.parametrize("virtual, code", [(False, "AMB"), (True, "VR")])
def test_in_person_sessions_are_ambulatory_and_telehealth_virtual(virtual, code):
    encounter = build_encounter("individual", "pat-1", start=START, virtual=virtual)
    assert encounter["class"] == {**encounter["class"], "system": codes.V3_ACT_CODE, "code": code}
    assert Encounter.model_validate(encounter).class_fhir.code == code


def test_a_session_is_labelled_and_linked_to_the_patients_episode_plan_and_clinician():
    encounter = build_encounter("group", "pat-1", start=START, end=END, status="finished", encounter_id="enc-1",
                                episode_id="ep-1", activity=("cp-1", 0), practitioner_id="prac-1")
    assert encounter["meta"]["security"] == codes.PART2_LABELS
    assert encounter["id"] == "enc-1" and encounter["subject"] == {"reference": "Patient/pat-1"}
    assert encounter["episodeOfCare"] == [{"reference": "EpisodeOfCare/ep-1"}]
    assert encounter["basedOn"] == [{"type": "ServiceRequest",
                                     "identifier": {"system": CAREPLAN_ACTIVITY, "value": "cp-1/0"}}]
    assert encounter["participant"] == [{"individual": {"reference": "Practitioner/prac-1"}}]
    assert encounter["period"] == {"start": "2025-03-03T14:00:00+00:00", "end": "2025-03-03T17:00:00+00:00"}
    Encounter.model_validate(encounter)


def test_the_activitys_own_code_can_replace_the_kinds_type():
    module = {"coding": [{"system": codes.HCPCS, "code": "H2027"},
                         {"system": f"{codes.CODE_BASE}/iop-skill-module", "code": "mindfulness"}], "text": "M"}
    encounter = build_encounter("psychoeducation", "pat-1", start=START, session_type=module)
    assert encounter["type"] == [module] and encounter["type"][0] is not module


@pytest.mark.parametrize("arguments, message", [
    ({"kind": "yoga"}, "unknown session kind"),
    ({"start": datetime(2025, 3, 3, 14)}, "time zone"),
    ({"status": "finished"}, "period.end"),
    ({"status": "cancelled"}, "unknown cancellation reason"),
])
def test_a_session_the_workflow_would_refuse_is_not_built(arguments, message):
    with pytest.raises(ValueError, match=message):
        build_encounter(**{"kind": "group", "patient_id": "pat-1", "start": START, **arguments})


def test_a_no_show_is_built_cancelled_with_its_reason():
    encounter = build_encounter("family", "pat-1", start=START, status="cancelled", cancel_reason="no-show")
    assert encounter["status"] == "cancelled" and cancellation_reason(encounter) == "no-show"
    Encounter.model_validate(encounter)


ATTENDEES = [Attendee("pat-1", "attended", "ep-1"), Attendee("pat-2", "no-show"), Attendee("pat-3", "excused")]


def test_a_group_session_gives_each_patient_an_encounter_that_names_no_one_else():
    encounters = group_attendance("grp-7f3a", ATTENDEES, start=START, end=END, practitioner_id="prac-1")
    assert [e["subject"]["reference"] for e in encounters] == ["Patient/pat-1", "Patient/pat-2", "Patient/pat-3"]
    for encounter, attendee in zip(encounters, ATTENDEES, strict=True):
        others = {a.patient_id for a in ATTENDEES} - {attendee.patient_id}
        text = json.dumps(encounter)
        assert not any(other in text for other in others)
        assert encounter["identifier"] == [{"system": GROUP_SESSION, "value": "grp-7f3a"}]
        assert encounter["meta"]["security"] == codes.PART2_LABELS
        Encounter.model_validate(encounter)


def test_group_attendance_sets_each_patients_status_and_reason():
    encounters = group_attendance("grp-7f3a", ATTENDEES, start=START, end=END)
    assert [(e["status"], cancellation_reason(e)) for e in encounters] == [
        ("finished", None), ("cancelled", "no-show"), ("cancelled", "patient-cancelled")]
    assert encounters[0]["episodeOfCare"] == [{"reference": "EpisodeOfCare/ep-1"}]


def test_recording_the_same_group_session_again_gives_the_same_encounter_ids():
    first = group_attendance("grp-7f3a", ATTENDEES, start=START, end=END)
    again = group_attendance("grp-7f3a", ATTENDEES[::-1], start=START, end=END)
    assert {e["id"] for e in first} == {e["id"] for e in again} and len({e["id"] for e in first}) == 3


@pytest.mark.parametrize("group_id, attendees, message", [
    ("grp-1", [Attendee("pat-1", "attended"), Attendee("pat-1", "no-show")], "listed twice"),
    ("grp-for-pat-2", ATTENDEES, "must not contain a patient id"),
    ("grp-1", [Attendee("pat-1", "late")], "attendance must be one of"),
])
def test_group_attendance_refuses_what_would_break_the_record(group_id, attendees, message):
    with pytest.raises(ValueError, match=message):
        group_attendance(group_id, attendees, start=START, end=END)


def test_a_patient_id_that_only_appears_inside_a_longer_token_is_not_a_leak():
    encounters = group_attendance("grp-2025-03-03", [Attendee("3", "attended"), Attendee("25", "attended")],
                                  start=START, end=END)
    assert len(encounters) == 2
