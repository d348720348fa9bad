"""A patient's journey across the running services, observed on the topics."""
from __future__ import annotations

import json

import requests

from services.intake.samples import created_id, partner_submission
from tests.support.auth import http
from tests.support.events import EventWatcher
from tests.support.processes import base_url
from tests.support.waiting import wait_until

INTAKE, CAREPLAN, ENCOUNTERS = base_url("intake"), base_url("careplan"), base_url("encounters")
JSON = {"Content-Type": "application/fhir+json"}


def submit(bundle: dict) -> dict:
    resp = http.post(INTAKE, json=bundle, headers=JSON, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_given_a_referral_when_the_intake_is_submitted_then_a_plan_and_its_sessions_exist(
        watcher: EventWatcher) -> None:
    answer = submit(partner_submission())
    patient = created_id(answer, "Patient")
    assessed = watcher.wait_for("iop.intake.assessed", patient)[0]
    assert {o["code"]["coding"][0]["code"] for o in assessed.of_type("Observation")} >= {"44261-6", "70274-6"}
    created = watcher.wait_for("iop.careplan.created", patient)[0]
    careplan = created.focus
    assert careplan["status"] == "active" and careplan["subject"]["reference"] == f"Patient/{patient}"
    assert created.of_type("Goal") and created.of_type("EpisodeOfCare")
    plans = http.get(f"{CAREPLAN}/CarePlan", params={"patient": patient}, timeout=5).json()
    assert plans["total"] == 1
    planned = watcher.wait_for("iop.encounter.planned", patient)
    sessions = wait_until(lambda: http.get(f"{ENCOUNTERS}/Encounter", params={
        "patient": patient, "status": "planned"}, timeout=5).json().get("total"), 30, what="planned sessions")
    assert sessions >= len(planned) > 0


def admit(watcher: EventWatcher) -> tuple[str, dict]:
    """A referral admitted to IOP: the patient id and the drafted CarePlan, once sessions are planned."""
    patient = created_id(submit(partner_submission()), "Patient")
    careplan = watcher.wait_for("iop.careplan.created", patient)[0].focus
    watcher.wait_for("iop.encounter.planned", patient)
    return patient, careplan


def sessions_of(patient: str, status: str = "planned") -> list[dict]:
    bundle = http.get(f"{ENCOUNTERS}/Encounter", params={"patient": patient, "status": status,
                                                             "_sort": "date", "_count": 100}, timeout=5).json()
    return [e["resource"] for e in bundle.get("entry", [])]


def put(url: str, resource: dict) -> requests.Response:
    etag = f'W/"{resource["meta"]["versionId"]}"'
    return http.put(f"{url}/{resource['resourceType']}/{resource['id']}", json=resource,
                        headers={**JSON, "If-Match": etag}, timeout=10)


NO_SHOW = {"url": "http://hl7.org/fhir/StructureDefinition/encounter-reasonCancelled",
           "valueCodeableConcept": {"coding": [{"system": "https://iop-suite.org/fhir/CodeSystem/"
                                                "session-cancellation-reason", "code": "no-show"}]}}


def current_plan(careplan_id: str) -> dict:
    return http.get(f"{CAREPLAN}/CarePlan/{careplan_id}", timeout=5).json()


def attendance(careplan: dict) -> dict[str, float]:
    ext = next((e for e in careplan.get("extension", []) if e["url"].endswith("session-attendance")),
               {"extension": [{"url": "attended", "valueUnsignedInt": 0}]})
    return {e["url"]: e.get("valueUnsignedInt", e.get("valueQuantity", {}).get("value")) for e in ext["extension"]}


def test_given_sessions_held_and_missed_then_attendance_moves_and_two_no_shows_ask_for_a_plan_review(
        watcher: EventWatcher) -> None:
    patient, careplan = admit(watcher)
    first, second, third = sessions_of(patient)[:3]
    assert put(ENCOUNTERS, dict(first, status="finished")).status_code == 200
    watcher.wait_for("iop.encounter.finished", patient)
    wait_until(lambda: attendance(current_plan(careplan["id"]))["attended"] == 1, 30, what="attendance")
    for missed in (second, third):
        resp = put(ENCOUNTERS, dict(missed, status="cancelled", extension=[*missed.get("extension", []), NO_SHOW]))
        assert resp.status_code == 200, resp.text
    cancelled = watcher.wait_for("iop.encounter.cancelled", patient, count=2)
    assert all(NO_SHOW in c.focus["extension"] for c in cancelled)
    revised = watcher.wait_for("iop.careplan.revised", patient)[0]
    task = revised.of_type("Task")[0]
    assert task["code"]["coding"][0]["code"] == "missed-sessions" and task["status"] == "requested"
    counts = attendance(current_plan(careplan["id"]))
    assert counts["attended"] == 1 and counts["missed"] == 2 and counts["missed-streak"] == 2
    assert counts["rate"] == 33.3


def test_an_invalid_session_transition_is_refused_with_409_and_stores_nothing(watcher: EventWatcher) -> None:
    patient, _ = admit(watcher)
    session = sessions_of(patient)[0]
    assert put(ENCOUNTERS, dict(session, status="finished")).status_code == 200
    finished = http.get(f"{ENCOUNTERS}/Encounter/{session['id']}", timeout=5).json()
    back = put(ENCOUNTERS, dict(finished, status="planned"))
    assert back.status_code == 409 and back.json()["resourceType"] == "OperationOutcome"
    assert http.get(f"{ENCOUNTERS}/Encounter/{session['id']}", timeout=5).json()["status"] == "finished"


def test_given_a_reassessment_then_goal_achievement_changes_and_is_announced(watcher: EventWatcher) -> None:
    from services.intake.questionnaires import PHQ9_URL
    from services.intake.samples import phq9, response

    patient, careplan = admit(watcher)
    follow_up = response(PHQ9_URL, f"Patient/{patient}", **phq9([0, 1, 0, 1, 0, 0, 1, 0, 0]))
    resp = http.post(f"{INTAKE}/QuestionnaireResponse", json=follow_up, headers=JSON, timeout=10)
    assert resp.status_code == 201, resp.text
    completed = watcher.wait_for("iop.assessment.completed", patient)[0]
    assert completed.of_type("Observation")[0]["valueInteger"] == 3
    updated = watcher.wait_for("iop.goal.updated", patient)[0].focus
    assert updated["achievementStatus"]["coding"][0]["code"] == "achieved"
    goal = http.get(f"{CAREPLAN}/Goal/{updated['id']}", timeout=5).json()
    assert goal["achievementStatus"]["coding"][0]["code"] == "achieved"


def test_a_clinicians_revision_emits_exactly_one_event_carrying_the_new_version(watcher: EventWatcher) -> None:
    patient, careplan = admit(watcher)
    plan = current_plan(careplan["id"])
    plan["note"] = [{"text": "Revision: add a weekly family session once the family can attend."}]
    resp = put(CAREPLAN, plan)
    assert resp.status_code == 200, resp.text
    version = resp.json()["meta"]["versionId"]
    revised = watcher.wait_for("iop.careplan.revised", patient)
    assert [r.headers["ce_subject"] for r in revised] == [f"CarePlan/{plan['id']}/_history/{version}"]
    assert revised[0].focus["note"][0]["text"].startswith("Revision")
    stale = put(CAREPLAN, plan)
    assert stale.status_code == 412
    watcher.wait_for("iop.encounter.planned", patient)
    assert len(watcher.events("iop.careplan.revised", patient)) == 1


def test_graduation_refused_then_granted_by_override_emits_exactly_one_event(watcher: EventWatcher) -> None:
    patient, careplan = admit(watcher)
    url = f"{CAREPLAN}/CarePlan/{careplan['id']}/$graduate"
    refused = http.post(url, json={"resourceType": "Parameters"}, headers=JSON, timeout=10)
    assert refused.status_code == 422
    problems = " ".join(i["diagnostics"] for i in refused.json()["issue"])
    assert "attendance" in problems
    override = {"resourceType": "Parameters", "parameter": [
        {"name": "override-reason", "valueString": "Stepping down early: stable and moving out of the area."}]}
    granted = http.post(url, json=override, headers=JSON, timeout=10)
    assert granted.status_code == 200, granted.text
    assert granted.json()["status"] == "completed"
    graduated = watcher.wait_for("iop.careplan.graduated", patient)
    assert graduated[0].focus["status"] == "completed"
    episode = graduated[0].of_type("EpisodeOfCare")[0]
    assert episode["status"] == "finished"
    again = http.post(url, json=override, headers=JSON, timeout=10)
    assert again.status_code == 422
    assert len(watcher.events("iop.careplan.graduated", patient)) == 1
    # The sessions still planned are cancelled as the plan changed; none is planned again.
    wait_until(lambda: not sessions_of(patient), 30, what="no planned session left after graduation")
    cancelled = sessions_of(patient, "cancelled")
    assert cancelled and all("plan-changed" in json.dumps(e.get("extension", [])) for e in cancelled)
