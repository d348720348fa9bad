"""A patient's journey across the running services, observed on the topics."""
from __future__ import annotations

import requests

from tests.support.events import EventWatcher
from tests.support.intake import partner_submission
from tests.support.processes import base_url
from tests.support.waiting import wait_until

INTAKE, CAREPLAN, ENCOUNTERS = base_url("intake"), base_url("careplan"), base_url("encounters")
JSON = {"Content-Type": "application/fhir+json"}


def submit(bundle: dict) -> dict:
    resp = requests.post(INTAKE, json=bundle, headers=JSON, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def created_id(response_bundle: dict, rtype: str) -> str:
    loc = next(e["response"]["location"] for e in response_bundle["entry"]
               if e["response"]["location"].startswith(rtype + "/"))
    return loc.split("/")[1]


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
    plans = requests.get(f"{CAREPLAN}/CarePlan", params={"patient": patient}, timeout=5).json()
    assert plans["total"] == 1
    planned = watcher.wait_for("iop.encounter.planned", patient)
    sessions = wait_until(lambda: requests.get(f"{ENCOUNTERS}/Encounter", params={
        "patient": patient, "status": "planned"}, timeout=5).json().get("total"), 30, what="planned sessions")
    assert sessions >= len(planned) > 0
