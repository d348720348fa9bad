"""Security on the running services: tokens, scopes, partner isolation, the audit trail, no PHI in logs."""
from __future__ import annotations

import uuid

import jwt
import requests

from services.aftercare.samples import subscription
from services.intake.samples import created_id, partner_submission
from shared.auth import mint
from tests.e2e.test_journey import JSON
from tests.support.auth import TEST_SECRET, http, session, token
from tests.support.events import EventWatcher
from tests.support.processes import base_url

INTAKE, CAREPLAN = base_url("intake"), base_url("careplan")


def test_no_or_bad_token_is_401_with_www_authenticate_and_an_operation_outcome(suite) -> None:
    expired = jwt.encode({"iss": "iop-suite", "aud": "iop-suite", "sub": "x", "exp": 1}, TEST_SECRET, "HS256")
    for headers in ({}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": f"Bearer {expired}"}):
        resp = requests.get(f"{CAREPLAN}/CarePlan", headers=headers, timeout=5)
        assert resp.status_code == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert resp.json()["resourceType"] == "OperationOutcome"
    assert requests.get(f"{CAREPLAN}/metadata", timeout=5).status_code == 200  # discovery stays open


def test_a_missing_scope_is_403_and_each_interaction_needs_its_own(suite) -> None:
    reader = session("system/CarePlan.rs")
    assert reader.get(f"{CAREPLAN}/CarePlan", timeout=5).status_code == 200
    refused = reader.post(f"{CAREPLAN}/CarePlan", json={"resourceType": "CarePlan"}, headers=JSON, timeout=5)
    assert refused.status_code == 403 and refused.json()["issue"][0]["code"] == "forbidden"
    assert reader.get(f"{CAREPLAN}/Goal", timeout=5).status_code == 403
    v1 = session("user/CarePlan.read")
    assert v1.get(f"{CAREPLAN}/CarePlan", timeout=5).status_code == 200
    no_search = session("system/CarePlan.r")
    assert no_search.get(f"{CAREPLAN}/CarePlan", timeout=5).status_code == 403
    bundle = partner_submission()
    only_patients = session("system/Patient.c system/Patient.s")
    assert only_patients.post(INTAKE, json=bundle, headers=JSON, timeout=10).status_code == 403
    patient_app = session("launch/patient patient/*.read")  # would need a patient compartment: refused, not widened
    refused = patient_app.get(f"{CAREPLAN}/CarePlan", timeout=5)
    assert refused.status_code == 403
    assert "patient/ scopes are not accepted" in refused.json()["issue"][0]["diagnostics"]


def test_a_referral_partner_sees_only_its_own_submissions(suite) -> None:
    alpha, beta = session("system/*.cruds", partner="alpha"), session("system/*.cruds", partner="beta")
    mine = alpha.post(INTAKE, json=partner_submission(), headers=JSON, timeout=10)
    assert mine.status_code == 200, mine.text
    patient = created_id(mine.json(), "Patient")
    theirs = created_id(beta.post(INTAKE, json=partner_submission(), headers=JSON, timeout=10).json(), "Patient")
    assert alpha.get(f"{INTAKE}/Patient/{patient}", timeout=5).status_code == 200
    assert beta.get(f"{INTAKE}/Patient/{patient}", timeout=5).status_code == 404
    for rtype in ("Patient", "QuestionnaireResponse", "Observation", "ServiceRequest"):
        found = beta.get(f"{INTAKE}/{rtype}", params={"_count": 1000}, timeout=5).json()
        ids = {e["resource"]["id"] for e in found.get("entry", [])}
        refs = {e["resource"].get("subject", {}).get("reference") for e in found.get("entry", [])}
        assert patient not in ids and f"Patient/{patient}" not in refs, rtype
        assert theirs in ids or f"Patient/{theirs}" in refs, rtype
    assert beta.get(f"{INTAKE}/Questionnaire", timeout=5).json()["total"] == 4  # the catalogue is for everyone
    assert beta.delete(f"{INTAKE}/Patient/{patient}", timeout=5).status_code == 404  # nor can it delete theirs
    assert beta.get(f"{INTAKE}/_history", timeout=5).status_code == 403  # nor list them in the system history
    assert beta.get(f"{INTAKE}/Patient/_history", timeout=5).status_code == 403
    assert alpha.get(f"{INTAKE}/Patient/{patient}", timeout=5).status_code == 200


def test_reads_and_changes_of_patient_data_are_audited_and_queryable_by_patient(
        suite, watcher: EventWatcher) -> None:
    patient = created_id(http.post(INTAKE, json=partner_submission(), headers=JSON, timeout=10).json(), "Patient")
    careplan = watcher.wait_for("iop.careplan.created", patient)[0].focus
    reader = session("system/CarePlan.rs", partner=None)
    assert reader.get(f"{CAREPLAN}/CarePlan/{careplan['id']}", timeout=5).status_code == 200
    trail = http.get(f"{CAREPLAN}/AuditEvent", params={"patient": f"Patient/{patient}"}, timeout=5).json()
    reads = [e["resource"] for e in trail.get("entry", []) if e["resource"]["action"] == "R"]
    assert reads and reads[0]["outcome"] == "0" and reads[0]["agent"][0]["who"]["display"] == "test-client"
    assert any(e["what"].get("reference") == f"CarePlan/{careplan['id']}" for e in reads[0]["entity"])
    created = http.get(f"{INTAKE}/AuditEvent", params={"patient": f"Patient/{patient}", "action": "C"},
                       timeout=5).json()
    assert created.get("total", 0) >= 1


def test_no_log_line_carries_the_patients_name_birth_date_identifier_or_answers(
        suite, watcher: EventWatcher) -> None:
    name, identifier = f"Quixotel{uuid.uuid4().hex[:6]}", f"MRN-{uuid.uuid4().hex[:10]}"
    bundle = partner_submission(identifier)
    bundle["entry"][0]["resource"]["name"] = [{"family": name, "given": ["Zebulon"]}]
    bundle["entry"][0]["resource"]["birthDate"] = "1977-07-17"
    goals_text = f"Reconnect with my sister {uuid.uuid4().hex[:6]}"
    for item in bundle["entry"][2]["resource"]["item"]:
        for sub in item.get("item", []):
            if sub["linkId"] == "treatment-goals":
                sub["answer"] = [{"valueString": goals_text}]
    answer = http.post(INTAKE, json=bundle, headers=JSON, timeout=10)
    assert answer.status_code == 200
    patient = created_id(answer.json(), "Patient")
    watcher.wait_for("iop.encounter.planned", patient)
    bad = http.post(f"{INTAKE}/Patient", json={"resourceType": "Patient", "name": [{"family": name}],
                                               "birthDate": "1977-07-17", "gender": "nonsense"},
                    headers=JSON, timeout=5)
    assert bad.status_code == 422 and name not in bad.text and "1977-07-17" not in bad.text
    logs = "".join(p.log.read_text(errors="replace") for p in suite.values())
    assert patient in logs  # ids are logged ...
    for secret in (name, "Zebulon", identifier, "1977-07-17", goals_text, TEST_SECRET, token()):
        assert secret not in logs, "a log line carries PHI or a secret"


def test_a_client_naming_its_organisation_subscribes_for_it_and_no_other(suite) -> None:
    """The recipient is whom the Part 2 consent gate checks; a token's `organization` claim binds it."""
    aftercare = base_url("aftercare")
    ehr = requests.Session()
    ehr.headers["Authorization"] = "Bearer " + mint(TEST_SECRET, "system/Subscription.cruds", subject="ehr-a",
                                                    organization="Organization/hospital-a")
    patient = f"pt-{uuid.uuid4().hex[:8]}"
    endpoint = "http://127.0.0.1:9/notifications"  # never reached: the subscriptions are deleted below
    created = []
    try:
        posing = ehr.post(f"{aftercare}/Subscription", headers=JSON, timeout=10,
                          json=subscription("careplan-revised", patient, endpoint, "Organization/hospital-b"))
        assert posing.status_code == 403, posing.text
        assert "Organization/hospital-a" in posing.json()["issue"][0]["diagnostics"]

        unnamed = subscription("careplan-revised", patient, endpoint, "Organization/x")
        unnamed["extension"] = []
        del unnamed["extension"]
        own = ehr.post(f"{aftercare}/Subscription", json=unnamed, headers=JSON, timeout=10)
        assert own.status_code == 201, own.text
        created.append(own.json()["id"])
        recipient = [e for e in own.json()["extension"] if e["url"].endswith("/subscription-recipient")]
        assert recipient[0]["valueReference"] == {"reference": "Organization/hospital-a"}  # filled in

        theirs = http.post(f"{aftercare}/Subscription", headers=JSON, timeout=10,  # an operator, for hospital B
                           json=subscription("careplan-revised", patient, endpoint, "Organization/hospital-b"))
        assert theirs.status_code == 201, theirs.text
        created.append(theirs.json()["id"])
        takeover = dict(theirs.json(), extension=recipient)
        resp = ehr.put(f"{aftercare}/Subscription/{takeover['id']}", json=takeover, headers=JSON, timeout=10)
        assert resp.status_code == 403 and "another organisation" in resp.json()["issue"][0]["diagnostics"]
        resp = ehr.delete(f"{aftercare}/Subscription/{takeover['id']}", timeout=10)
        assert resp.status_code == 403
        for operation in ("$status", "$events"):  # what was sent to hospital B is not hospital A's to read
            assert ehr.get(f"{aftercare}/Subscription/{takeover['id']}/{operation}", timeout=10).status_code == 403
        assert ehr.get(f"{aftercare}/Subscription/{created[0]}/$status", timeout=10).status_code == 200
        assert http.get(f"{aftercare}/Subscription/{takeover['id']}", timeout=10).status_code == 200
    finally:
        for sid in created:
            http.delete(f"{aftercare}/Subscription/{sid}", timeout=10)
