"""Step 1 of care on the real broker: a partner's submission, its events, idempotency, refusals, safety."""
from __future__ import annotations

import json
import uuid

from kafka import KafkaProducer

from services.intake.samples import FREQ, created_id, intake_response, partner_submission, phq9
from tests.e2e.test_journey import JSON
from tests.support.auth import http
from tests.support.broker import Broker
from tests.support.events import EventWatcher
from tests.support.processes import base_url

INTAKE, CAREPLAN = base_url("intake"), base_url("careplan")
LOINC_TOTALS = {"44261-6": 11, "70274-6": 11, "75626-2": 6, "82667-7": 3}  # DAST-10 item 3 is reverse-scored


def test_a_partner_submission_yields_scored_events_and_a_repeat_creates_nothing(watcher: EventWatcher) -> None:
    bundle = partner_submission(bundle_id=uuid.uuid4().hex)
    first = http.post(INTAKE, json=bundle, headers=JSON, timeout=10)
    assert first.status_code == 200, first.text
    patient = created_id(first.json(), "Patient")
    received = watcher.wait_for("iop.intake.received", patient)[0]
    assert received.of_type("Patient") and received.of_type("ServiceRequest")
    assessed = watcher.wait_for("iop.intake.assessed", patient)[0]
    totals = {o["code"]["coding"][0]["code"]: o.get("valueInteger") for o in assessed.of_type("Observation")}
    assert {k: totals[k] for k in LOINC_TOTALS} == LOINC_TOTALS
    recommendation = next(o for o in assessed.of_type("Observation")
                          if o["code"]["coding"][0]["code"] == "asam-level-recommendation")
    assert recommendation["valueCodeableConcept"]["coding"][0]["code"] == "2.1"
    for resource in [assessed.focus, *assessed.of_type("Observation")]:
        assert "42CFRPart2" in {s["code"] for s in resource["meta"]["security"]}

    again = http.post(INTAKE, json=bundle, headers=JSON, timeout=10)
    assert again.status_code == 200 and again.json() == first.json()
    keyed = partner_submission()
    by_key = http.post(INTAKE, json=keyed, headers={**JSON, "Idempotency-Key": "k-" + patient}, timeout=10)
    repeat = http.post(INTAKE, json=keyed, headers={**JSON, "Idempotency-Key": "k-" + patient}, timeout=10)
    assert repeat.json() == by_key.json()
    watcher.wait_for("iop.careplan.created", patient)
    responses = http.get(f"{INTAKE}/QuestionnaireResponse", params={"patient": patient}, timeout=5).json()
    assert responses["total"] == 1
    assert len(watcher.events("iop.intake.assessed", patient)) == 1


def test_the_same_patient_submitted_twice_is_matched_by_identifier(watcher: EventWatcher) -> None:
    identifier = uuid.uuid4().hex[:12]
    one = created_id(http.post(INTAKE, json=partner_submission(identifier), headers=JSON, timeout=10).json(),
                     "Patient")
    two = created_id(http.post(INTAKE, json=partner_submission(identifier), headers=JSON, timeout=10).json(),
                     "Patient")
    assert one == two
    found = http.get(f"{INTAKE}/Patient", params={"identifier": f"https://partner.example.org/patient-id|"
                                                                f"{identifier}"}, timeout=5).json()
    assert found["total"] == 1


def test_an_invalid_response_is_refused_with_precise_issues_and_emits_nothing(watcher: EventWatcher) -> None:
    bundle = partner_submission(phq9_q3=[{"system": "http://loinc.org", "code": "LA0000-0"}], gad7_q1=None)
    resp = http.post(INTAKE, json=bundle, headers=JSON, timeout=10)
    assert resp.status_code == 422
    issues = resp.json()["issue"]
    paths = " ".join(e for i in issues for e in i.get("expression", []))
    assert "QuestionnaireResponse.item" in paths and len(issues) >= 2
    identifier = bundle["entry"][0]["resource"]["identifier"][0]["value"]
    found = http.get(f"{INTAKE}/Patient", params={"identifier": f"https://partner.example.org/patient-id|"
                                                                f"{identifier}"}, timeout=5).json()
    assert found["total"] == 0  # all or nothing: not even the Patient was stored
    ok = http.post(INTAKE, json=partner_submission(), headers=JSON, timeout=10)
    watcher.wait_for("iop.intake.assessed", created_id(ok.json(), "Patient"))
    assert not [e for e in watcher.seen if e.key not in (created_id(ok.json(), "Patient"),)
                and e.type.startswith("iop.intake")]


def test_phq9_item_9_above_zero_always_raises_a_safety_alert_and_never_an_iop_admission(
        watcher: EventWatcher) -> None:
    resp = http.post(INTAKE, json=partner_submission(**phq9([2, 2, 1, 1, 2, 1, 1, 1, 1])), headers=JSON, timeout=10)
    patient = created_id(resp.json(), "Patient")
    alert = watcher.wait_for("iop.intake.safety-alert", patient)[0]
    assert alert.focus["resourceType"] == "Flag" and alert.focus["status"] == "active"
    assessed = watcher.wait_for("iop.intake.assessed", patient)[0]
    recommendation = next(o for o in assessed.of_type("Observation")
                          if o["code"]["coding"][0]["code"] == "asam-level-recommendation")
    disposition = next(c for c in recommendation["component"] if c["code"]["coding"][0]["code"] == "disposition")
    assert disposition["valueCodeableConcept"]["coding"][0]["code"] == "urgent-safety-review"
    flags = http.get(f"{INTAKE}/Flag", params={"patient": patient, "status": "active"}, timeout=5).json()
    assert flags["total"] == 1
    follow = http.post(INTAKE, json=partner_submission(), headers=JSON, timeout=10)  # a later patient's plan ...
    watcher.wait_for("iop.careplan.created", created_id(follow.json(), "Patient"))
    assert http.get(f"{CAREPLAN}/CarePlan", params={"patient": patient}, timeout=5).json()["total"] == 0


def test_an_intake_event_delivered_three_times_yields_exactly_one_plan(watcher: EventWatcher, broker: Broker) -> None:
    patient = created_id(http.post(INTAKE, json=partner_submission(), headers=JSON, timeout=10).json(), "Patient")
    assessed = watcher.wait_for("iop.intake.assessed", patient)[0]
    watcher.wait_for("iop.careplan.created", patient)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for ce_id in (assessed.headers["ce_id"], assessed.headers["ce_id"], str(uuid.uuid4())):  # redelivered, resent
        headers = [(k, (ce_id if k == "ce_id" else v).encode()) for k, v in assessed.headers.items()]
        producer.send(assessed.topic, key=patient.encode(), value=json.dumps(assessed.bundle).encode(),
                      headers=headers)
    producer.flush(10)
    producer.close(5)
    marker = http.post(INTAKE, json=partner_submission(), headers=JSON, timeout=10)
    watcher.wait_for("iop.careplan.created", created_id(marker.json(), "Patient"))  # consumed past the resends
    plans = http.get(f"{CAREPLAN}/CarePlan", params={"patient": patient}, timeout=5).json()
    assert plans["total"] == 1
    goals = http.get(f"{CAREPLAN}/Goal", params={"patient": patient}, timeout=5).json()
    assert goals["total"] == len(plans["entry"][0]["resource"]["goal"])
    assert len(watcher.events("iop.careplan.created", patient)) == 1


def test_a_response_in_progress_is_stored_but_not_scored(watcher: EventWatcher) -> None:
    first = http.post(INTAKE, json=partner_submission(), headers=JSON, timeout=10)
    patient = created_id(first.json(), "Patient")
    watcher.wait_for("iop.intake.assessed", patient)
    draft = intake_response(f"Patient/{patient}", status="in-progress", phq9_q1=[FREQ[3]], gad7_q2=None)
    resp = http.post(f"{INTAKE}/QuestionnaireResponse", json=draft, headers=JSON, timeout=10)
    assert resp.status_code == 201, resp.text
    observations = http.get(f"{INTAKE}/Observation", params={"derived-from": f"QuestionnaireResponse/"
                                                                             f"{resp.json()['id']}"}, timeout=5)
    assert observations.json()["total"] == 0
