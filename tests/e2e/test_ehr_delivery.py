"""Step 5 of care reaching external EHRs: aftercare plans, Backport-IG notifications, consent, retries."""
from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta

import pytest
from fhir.resources.R4B.bundle import Bundle

from services.aftercare.notifications import verify_signature
from services.aftercare.samples import LOCAL, consent, event_numbers, notification_status, subscription
from tests.e2e.test_journey import JSON, admit, current_plan, put
from tests.support.auth import http
from tests.support.events import EventWatcher
from tests.support.ports import port
from tests.support.processes import base_url
from tests.support.receiver import Receiver
from tests.support.waiting import wait_until

AFTERCARE, CAREPLAN = base_url("aftercare"), base_url("careplan")
SECRET = "a-shared-secret-of-32-characters"


@pytest.fixture
def receivers(tmp_path) -> Iterator[tuple[Receiver, Receiver]]:
    a, b = Receiver(port(18101), tmp_path), Receiver(port(18102), tmp_path)
    yield a, b
    a.proc.kill()
    b.proc.kill()


def create(resource: dict) -> dict:
    resp = http.post(f"{AFTERCARE}/{resource['resourceType']}", json=resource, headers=JSON, timeout=10)
    assert resp.status_code == 201, resp.text
    return resp.json()


def subscribe(topic: str, patient: str, receiver: Receiver, organisation: str, content: str = "id-only") -> dict:
    sub = create(subscription(topic, patient, receiver.url + "/notify", organisation, content, timeout_s=2,
                              secret=SECRET))
    assert sub["status"] == "requested" and "subscription-hmac-secret" not in json.dumps(sub)
    wait_until(lambda: http.get(f"{AFTERCARE}/Subscription/{sub['id']}", timeout=5).json()["status"] == "active",
               30, what="handshake done")
    return sub


def revise(careplan_id: str, text: str) -> None:
    plan = current_plan(careplan_id)
    plan["note"] = [*plan.get("note", []), {"text": text}]
    assert put(CAREPLAN, plan).status_code == 200


def graduate(careplan_id: str) -> None:
    override = {"resourceType": "Parameters", "parameter": [{"name": "override-reason", "valueString": "test"}]}
    resp = http.post(f"{CAREPLAN}/CarePlan/{careplan_id}/$graduate", json=override, headers=JSON, timeout=10)
    assert resp.status_code == 200, resp.text


def test_given_a_graduation_then_aftercare_is_planned_and_a_subscribed_ehr_gets_a_valid_signed_notification(
        watcher: EventWatcher, receivers) -> None:
    ehr, _ = receivers
    patient, careplan = admit(watcher)
    create(consent(patient, ["Organization/ehr-a"]))
    sub = subscribe("aftercare-planned", patient, ehr, "Organization/ehr-a", content="full-resource")
    graduate(careplan["id"])
    planned = watcher.wait_for("iop.aftercare.planned", patient)[0]
    assert planned.focus["basedOn"][0]["reference"].endswith(careplan["id"])
    assert planned.of_type("ServiceRequest")
    wait_until(lambda: ehr.notifications(), 30, what="notification received")
    raw = next(r for r in ehr.received() if notification_status(json.loads(r["body"]))["type"] == "event-notification")
    assert verify_signature(SECRET, raw["body"].encode(), raw["headers"]["X-IOP-Signature"])
    bundle = json.loads(raw["body"])
    parsed = Bundle.model_validate(bundle)
    assert parsed.type == "history" and event_numbers(bundle) == [1]
    careplans = [e["resource"] for e in bundle["entry"][1:] if e.get("resource", {}).get("resourceType") == "CarePlan"]
    assert careplans and any(s["code"] == "42CFRPart2" for s in careplans[0]["meta"]["security"])
    watcher.wait_for("iop.ehr.delivered", patient)
    audit = http.get(f"{AFTERCARE}/AuditEvent", params={"entity": f"Subscription/{sub['id']}"}, timeout=5).json()
    assert audit["total"] >= 2  # the handshake and the notification, each with outcome and latency
    Bundle.model_validate(ehr_status := http.get(f"{AFTERCARE}/Subscription/{sub['id']}/$status",
                                                     timeout=5).json())
    assert ehr_status["entry"][0]["resource"]["resourceType"] == "Parameters"
    resend = http.post(f"{AFTERCARE}/Subscription/{sub['id']}/$resend", json={"resourceType": "Parameters",
                       "parameter": [{"name": "eventsSinceNumber", "valueInteger": 1}]}, headers=JSON, timeout=5)
    assert resend.json()["parameter"][0]["valueInteger"] == 1
    wait_until(lambda: [event_numbers(b) for b in ehr.notifications()] == [[1], [1]], 30, what="event 1 resent")


def test_given_an_ehr_down_for_a_while_then_every_notification_arrives_in_order_and_the_other_is_not_delayed(
        watcher: EventWatcher, receivers) -> None:
    down, up = receivers
    patient, careplan = admit(watcher)
    create(consent(patient, ["Organization/ehr-a", "Organization/ehr-b"]))
    sub_down = subscribe("careplan-revised", patient, down, "Organization/ehr-a")
    subscribe("careplan-revised", patient, up, "Organization/ehr-b")
    down.mode("hang")
    for n in range(3):
        revise(careplan["id"], f"Revision {n + 1}")
    wait_until(lambda: len(up.notifications()) == 3, 30, what="the healthy EHR got all three")
    assert [event_numbers(b) for b in up.notifications()] == [[1], [2], [3]]
    assert down.notifications() == []
    down.proc.kill()  # the hung EHR goes away entirely, then comes back
    down.proc.start()
    wait_until(down._up, 20, what="receiver back")
    wait_until(lambda: len(down.notifications()) == 3, 60, what="the recovered EHR got every notification")
    numbers = [event_numbers(b) for b in down.notifications()]
    assert numbers == [[1], [2], [3]]
    focus_versions = [b["entry"][1]["fullUrl"] for b in down.notifications()]
    assert len(set(focus_versions)) == 1 and focus_versions[0].endswith(careplan["id"])
    replay = http.get(f"{AFTERCARE}/Subscription/{sub_down['id']}/$events",
                          params={"eventsSinceNumber": 2, "eventsUntilNumber": 3}, timeout=5).json()
    Bundle.model_validate(replay)
    assert event_numbers(replay) == [2, 3] and notification_status(replay)["type"] == "query-event"


def test_without_consent_nothing_is_sent_and_a_revoked_consent_stops_queued_deliveries(
        watcher: EventWatcher, receivers) -> None:
    ehr, _ = receivers
    patient, careplan = admit(watcher)
    sub = subscribe("careplan-revised", patient, ehr, "Organization/ehr-a")
    revise(careplan["id"], "Revision without consent")
    blocked = wait_until(lambda: [a for a in http.get(f"{AFTERCARE}/AuditEvent", params={
        "entity": f"Subscription/{sub['id']}", "outcome": "4"}, timeout=5).json().get("entry", [])], 30,
        what="blocked-by-consent audit")
    assert "no consent" in blocked[0]["resource"]["outcomeDesc"]
    granted = create(consent(patient, ["Organization/ehr-a"]))
    ehr.mode("fail")
    revise(careplan["id"], "Revision queued while the EHR fails")
    wait_until(lambda: len([a for a in http.get(f"{AFTERCARE}/AuditEvent", params={
        "entity": f"Subscription/{sub['id']}", "outcome": "4"}, timeout=5).json().get("entry", [])]) >= 2, 30,
        what="a failed attempt")
    revoked = dict(granted, status="inactive")
    assert http.put(f"{AFTERCARE}/Consent/{granted['id']}", json=revoked, headers={
        **JSON, "If-Match": 'W/"1"'}, timeout=5).status_code == 200
    ehr.mode("ok")
    wait_until(lambda: any("revoked" in a["resource"]["outcomeDesc"] for a in http.get(
        f"{AFTERCARE}/AuditEvent", params={"entity": f"Subscription/{sub['id']}"}, timeout=5).json()["entry"]),
        60, what="the queued delivery blocked at send time")
    assert ehr.notifications() == []


def test_a_missed_checkin_is_raised_once_when_its_window_passes(watcher: EventWatcher) -> None:
    patient, careplan = admit(watcher)
    graduate(careplan["id"])
    watcher.wait_for("iop.aftercare.planned", patient)
    later = (date.today() + timedelta(days=30)).isoformat()
    sweep = {"resourceType": "Parameters", "parameter": [{"name": "date", "valueDate": later}]}
    first = http.post(f"{AFTERCARE}/CarePlan/$sweep-checkins", json=sweep, headers=JSON, timeout=10).json()
    assert first["parameter"][0]["valueInteger"] >= 2  # weeks 1 and 2 (and 4) have passed unmet
    missed = watcher.wait_for("iop.aftercare.checkin-missed", patient, count=2)
    assert all(m.focus["resourceType"] == "CarePlan" for m in missed)
    again = http.post(f"{AFTERCARE}/CarePlan/$sweep-checkins", json=sweep, headers=JSON, timeout=10).json()
    assert again["parameter"][0]["valueInteger"] == 0


def test_write_back_transactions_are_accepted_by_an_independent_fhir_server(watcher: EventWatcher, hapi) -> None:
    import uuid

    from services.intake.samples import PARTNER_SYSTEM, created_id, partner_submission
    from tests.e2e.test_journey import submit

    mrn = uuid.uuid4().hex[:10]
    ehr_patient = http.post(f"{hapi.base_url}/Patient", json={
        "resourceType": "Patient", "identifier": [{"system": PARTNER_SYSTEM, "value": mrn}]},
        headers=JSON, timeout=30)
    assert ehr_patient.status_code == 201, ehr_patient.text
    patient = created_id(submit(partner_submission(mrn)), "Patient")
    careplan = watcher.wait_for("iop.careplan.created", patient)[0].focus
    create(consent(patient, ["Organization/hospital-ehr"]))
    sub = subscription("aftercare-planned", patient, hapi.base_url, "Organization/hospital-ehr", "full-resource",
                       timeout_s=30)
    sub["channel"]["extension"] += [
        {"url": f"{LOCAL}/subscription-delivery-mode", "valueCode": "write-back"},
        {"url": f"{LOCAL}/subscription-patient-identifier-system", "valueUri": PARTNER_SYSTEM}]
    created = create(sub)
    wait_until(lambda: http.get(f"{AFTERCARE}/Subscription/{created['id']}", timeout=5).json()["status"]
               == "active", 60, what="write-back endpoint checked")
    graduate(careplan["id"])
    aftercare_plan = watcher.wait_for("iop.aftercare.planned", patient)[0].focus
    watcher.wait_for("iop.ehr.delivered", patient, timeout=60)
    found = http.get(f"{hapi.base_url}/CarePlan", params={
        "identifier": f"https://iop-suite.org/fhir/NamingSystem/CarePlan|{aftercare_plan['id']}"}, timeout=30).json()
    assert found["total"] == 1
    ehr_plan = found["entry"][0]["resource"]
    assert ehr_plan["subject"]["reference"].endswith(f"Patient/{ehr_patient.json()['id']}")
    assert any(s["code"] == "42CFRPart2" for s in ehr_plan["meta"]["security"])
