"""Security on the running services: tokens, scopes, partner isolation, the audit trail, no PHI in logs."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import jwt
import pytest
import requests

from services.aftercare.samples import subscription
from services.intake.samples import PARTNER_SYSTEM, created_id, intake_response, partner_submission, patient, phq9
from shared.auth import mint
from shared.fhir.partners import PARTNER_TAG
from tests.e2e.test_journey import JSON
from tests.support.auth import TEST_SECRET, http, session, token
from tests.support.events import EventWatcher
from tests.support.processes import base_url

INTAKE, CAREPLAN = base_url("intake"), base_url("careplan")
ENCOUNTERS, AFTERCARE = base_url("encounters"), base_url("aftercare")
ALPHA, BETA = "alpha-referrals", "beta-referrals"
SAFETY_ALERT = phq9([2, 2, 1, 1, 2, 1, 1, 1, 1])  # so that the submission raises a Flag too
SEARCH_BY_PATIENT = {"QuestionnaireResponse": "subject", "Observation": "subject", "ServiceRequest": "subject",
                     "Flag": "patient"}


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
    patient_app = session("launch/patient patient/*.read")  # bound to no patient: refused, not widened
    refused = patient_app.get(f"{CAREPLAN}/CarePlan", timeout=5)
    assert refused.status_code == 403
    assert "bound to one patient by a patient claim" in refused.json()["issue"][0]["diagnostics"]


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


# -- referral partners: another partner's resources are as if they did not exist ---------------------------------

@dataclass(frozen=True)
class Submission:
    """What one referral partner submitted: its Patient's identifier and one resource of each type it owns."""

    partner: str
    identifier: str
    bundle_id: str
    ids: dict[str, str]

    @property
    def patient(self) -> str:
        return self.ids["Patient"]


def submit_as(partner: str) -> Submission:
    identifier, bundle_id = f"{partner}-{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    client = session(partner=partner)
    resp = client.post(INTAKE, json=partner_submission(identifier, bundle_id, **SAFETY_ALERT), headers=JSON,
                       timeout=10)
    assert resp.status_code == 200, resp.text
    ids = {t: created_id(resp.json(), t) for t in ("Patient", "ServiceRequest", "QuestionnaireResponse")}
    for rtype in ("Observation", "Flag"):
        found = client.get(f"{INTAKE}/{rtype}", params={"patient": ids["Patient"]}, timeout=5).json()
        assert found["total"] >= 1, rtype
        ids[rtype] = found["entry"][0]["resource"]["id"]
    return Submission(partner, identifier, bundle_id, ids)


@pytest.fixture(scope="module")
def alpha(suite) -> Submission:
    return submit_as(ALPHA)


def issues(resp: requests.Response, *ids: str) -> list[dict]:
    """The OperationOutcome's issues, with the ids the client itself sent masked."""
    assert resp.json()["resourceType"] == "OperationOutcome"
    text = resp.text
    for rid in filter(None, ids):
        text = text.replace(rid, "<id>")
    return json.loads(text)["issue"]


def same_refusal(theirs: requests.Response, none: requests.Response, status: int, theirs_id: str = "",
                 none_id: str = "") -> None:
    assert theirs.status_code == none.status_code == status, (theirs.text, none.text)
    assert issues(theirs, theirs_id) == issues(none, none_id)


def test_another_partners_resources_cannot_be_read_vread_or_history_read_as_if_they_did_not_exist(
        alpha: Submission) -> None:
    owner, beta = session(partner=ALPHA), session(partner=BETA)
    for rtype, rid in alpha.ids.items():
        missing = str(uuid.uuid4())
        for tail in ("", "/_history/1", "/_history"):
            assert owner.get(f"{INTAKE}/{rtype}/{rid}{tail}", timeout=5).status_code == 200, (rtype, tail)
            theirs = beta.get(f"{INTAKE}/{rtype}/{rid}{tail}", timeout=5)
            none = beta.get(f"{INTAKE}/{rtype}/{missing}{tail}", timeout=5)
            same_refusal(theirs, none, 404, rid, missing)
        assert beta.get(f"{INTAKE}/{rtype}/_history", timeout=5).status_code == 403  # it would list theirs
        assert beta.get(f"{INTAKE}/_history", timeout=5).status_code == 403


def test_another_partners_resources_are_never_found_by_search(alpha: Submission) -> None:
    owner, beta = session(partner=ALPHA), session(partner=BETA)
    for rtype, rid in alpha.ids.items():
        queries = [{"_id": rid}, {"_tag": f"{PARTNER_TAG}|{ALPHA}"}]
        queries.append({"identifier": f"{PARTNER_SYSTEM}|{alpha.identifier}"} if rtype == "Patient"
                       else {SEARCH_BY_PATIENT[rtype]: f"Patient/{alpha.patient}"})
        for query in queries:
            assert owner.get(f"{INTAKE}/{rtype}", params=query, timeout=5).json()["total"] >= 1, (rtype, query)
            for found in (beta.get(f"{INTAKE}/{rtype}", params=query, timeout=5),
                          beta.post(f"{INTAKE}/{rtype}/_search", data=query, timeout=5)):
                assert found.status_code == 200 and found.json()["total"] == 0, (rtype, query)
                assert "entry" not in found.json()


def test_a_write_naming_another_partners_resource_is_refused_as_one_naming_nothing_and_stores_nothing(
        alpha: Submission) -> None:
    beta = session(partner=BETA)
    own = created_id(beta.post(INTAKE, json=partner_submission(), headers=JSON, timeout=10).json(), "Patient")
    before = count_about(alpha)
    theirs_patient, no_patient = f"Patient/{alpha.patient}", f"Patient/{uuid.uuid4()}"
    note = {"text": "a note"}
    writes = {
        "QuestionnaireResponse": lambda ref: intake_response(ref),
        "ServiceRequest": lambda ref: {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                                       "subject": {"reference": ref}, "code": note},
        "Observation": lambda ref: {"resourceType": "Observation", "status": "final", "code": note,
                                    "subject": {"reference": ref}},
        "Flag": lambda ref: {"resourceType": "Flag", "status": "active", "code": note, "subject": {"reference": ref}},
    }
    for rtype, build in writes.items():
        same_refusal(beta.post(f"{INTAKE}/{rtype}", json=build(theirs_patient), headers=JSON, timeout=10),
                     beta.post(f"{INTAKE}/{rtype}", json=build(no_patient), headers=JSON, timeout=10), 422)
        theirs_tx = transaction({"resource": build(theirs_patient), "request": {"method": "POST", "url": rtype}})
        none_tx = transaction({"resource": build(no_patient), "request": {"method": "POST", "url": rtype}})
        same_refusal(beta.post(INTAKE, json=theirs_tx, headers=JSON, timeout=10),
                     beta.post(INTAKE, json=none_tx, headers=JSON, timeout=10), 422)
        theirs_batch = dict(theirs_tx, type="batch")
        none_batch = dict(none_tx, type="batch")
        entries = [beta.post(INTAKE, json=b, headers=JSON, timeout=10).json()["entry"][0]["response"]
                   for b in (theirs_batch, none_batch)]
        assert entries[0] == entries[1] and entries[0]["status"] == "422"
    for rtype, rid in alpha.ids.items():  # its own patient's referral, citing one of alpha's resources
        cites = [{"resourceType": "ServiceRequest", "status": "active", "intent": "order", "code": note,
                  "subject": {"reference": f"Patient/{own}"}, "supportingInfo": [{"reference": f"{rtype}/{cited}"}]}
                 for cited in (rid, str(uuid.uuid4()))]
        refused = [beta.post(f"{INTAKE}/ServiceRequest", json=c, headers=JSON, timeout=10) for c in cites]
        same_refusal(*refused, 422)
        assert issues(refused[0])[0]["expression"] == ["ServiceRequest.supportingInfo[0]"]
    based_on = intake_response(f"Patient/{own}")  # its own patient, but alpha's referral
    for sr in (alpha.ids["ServiceRequest"], str(uuid.uuid4())):
        based_on["basedOn"] = [{"reference": f"ServiceRequest/{sr}"}]
        refused = beta.post(f"{INTAKE}/QuestionnaireResponse", json=based_on, headers=JSON, timeout=10)
        assert refused.status_code == 422 and issues(refused, sr)[0]["expression"] == [
            "QuestionnaireResponse.basedOn[0]"]
    assert count_about(alpha) == before  # nothing stored under alpha's patient or referral


def count_about(sub: Submission) -> dict[str, int]:
    counts = {rtype: http.get(f"{INTAKE}/{rtype}", params={SEARCH_BY_PATIENT[rtype]: f"Patient/{sub.patient}"},
                              timeout=5).json()["total"] for rtype in SEARCH_BY_PATIENT}
    counts["based-on"] = http.get(f"{INTAKE}/QuestionnaireResponse", timeout=5, params={
        "based-on": f"ServiceRequest/{sub.ids['ServiceRequest']}"}).json()["total"]
    counts["referrals"] = http.get(f"{INTAKE}/ServiceRequest", params={"_count": 0}, timeout=5).json()["total"]
    return counts


def transaction(*entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": "transaction",
            "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", **e} for e in entries]}


def test_a_partners_transaction_may_refer_between_its_own_entries_in_a_cycle(suite) -> None:
    bundle = partner_submission()  # the response is based on the referral, which cites the response
    bundle["entry"][1]["resource"]["supportingInfo"] = [{"reference": bundle["entry"][2]["fullUrl"]}]
    resp = session(partner=BETA).post(INTAKE, json=bundle, headers=JSON, timeout=10)
    assert resp.status_code == 200, resp.text
    referral = session(partner=BETA).get(f"{INTAKE}/ServiceRequest/{created_id(resp.json(), 'ServiceRequest')}",
                                         timeout=5).json()
    assert referral["supportingInfo"] == [
        {"reference": f"QuestionnaireResponse/{created_id(resp.json(), 'QuestionnaireResponse')}"}]


def test_another_partners_resources_cannot_be_updated_or_deleted_as_if_they_did_not_exist(
        alpha: Submission) -> None:
    owner, beta = session(partner=ALPHA), session(partner=BETA)
    for rtype, rid in alpha.ids.items():
        current = owner.get(f"{INTAKE}/{rtype}/{rid}", timeout=5).json()
        missing = str(uuid.uuid4())
        same_refusal(beta.put(f"{INTAKE}/{rtype}/{rid}", json=current, headers=JSON, timeout=10),
                     beta.put(f"{INTAKE}/{rtype}/{missing}", json=dict(current, id=missing), headers=JSON,
                              timeout=10), 404, rid, missing)
        same_refusal(beta.delete(f"{INTAKE}/{rtype}/{rid}", timeout=10),
                     beta.delete(f"{INTAKE}/{rtype}/{missing}", timeout=10), 404, rid, missing)
        after = owner.get(f"{INTAKE}/{rtype}/{rid}", timeout=5)
        assert after.status_code == 200 and after.json()["meta"]["versionId"] == current["meta"]["versionId"]


def test_a_partners_conditional_reference_and_if_none_exist_never_match_another_partners_patient(suite) -> None:
    alpha, beta = submit_as(ALPHA), session(partner=BETA)  # an identifier beta has never used
    theirs, nobody = f"{PARTNER_SYSTEM}|{alpha.identifier}", f"{PARTNER_SYSTEM}|nobody-{uuid.uuid4().hex}"
    answers = [transaction({"resource": intake_response(f"Patient?identifier={who}"),
                            "request": {"method": "POST", "url": "QuestionnaireResponse"}}) for who in (theirs, nobody)]
    same_refusal(*(beta.post(INTAKE, json=bundle, headers=JSON, timeout=10) for bundle in answers), 412)

    lookups = dict(transaction({"request": {"method": "GET", "url": f"Patient/{alpha.patient}"}},
                               {"request": {"method": "GET", "url": f"Patient?identifier={theirs}"}},
                               {"request": {"method": "GET", "url": f"Patient?_id={alpha.patient}"}}), type="batch")
    answered = beta.post(INTAKE, json=lookups, headers=JSON, timeout=10).json()["entry"]
    assert answered[0]["response"]["status"] == "404"
    assert all(e["resource"]["total"] == 0 and "entry" not in e["resource"] for e in answered[1:])
    same_patient = patient(alpha.identifier)
    conditional = {"resource": same_patient, "request": {"method": "POST", "url": "Patient",
                                                         "ifNoneExist": f"identifier={theirs}"}}
    created = beta.post(INTAKE, json=transaction(conditional), headers=JSON, timeout=10).json()["entry"][0]
    assert created["response"]["status"] == "201 Created", created  # alpha's Patient did not match
    own = created["resource"]["id"]
    assert own != alpha.patient
    batch = beta.post(INTAKE, json=dict(transaction(conditional), type="batch"), headers=JSON, timeout=10).json()
    assert batch["entry"][0]["response"]["location"].startswith(f"Patient/{own}/")  # its own matches now
    for headers in ({}, {"If-None-Exist": f"identifier={theirs}"}):  # the natural key, and the header
        resp = beta.post(f"{INTAKE}/Patient", json=same_patient, headers={**JSON, **headers}, timeout=10)
        assert resp.status_code == 200 and resp.json()["id"] == own


def test_a_partner_repeating_another_partners_bundle_identifier_or_idempotency_key_gets_its_own_result(
        alpha: Submission) -> None:
    beta = session(partner=BETA)
    repeat = beta.post(INTAKE, json=partner_submission(bundle_id=alpha.bundle_id), headers=JSON, timeout=10)
    assert repeat.status_code == 200 and alpha.patient not in repeat.text
    key = str(uuid.uuid4())
    first = session(partner=ALPHA).post(f"{INTAKE}/Patient", json=patient(), timeout=10,
                                        headers={**JSON, "Idempotency-Key": key})
    again = beta.post(f"{INTAKE}/Patient", json=patient(), headers={**JSON, "Idempotency-Key": key}, timeout=10)
    assert first.status_code == again.status_code == 201 and first.json()["id"] != again.json()["id"]


def test_a_partners_audit_trail_holds_its_own_requests_only_and_names_no_other_partner(
        alpha: Submission) -> None:
    beta = session(partner=BETA)
    assert beta.get(f"{INTAKE}/Patient/{alpha.patient}", timeout=5).status_code == 404  # audited as beta's
    own = submit_as(BETA)
    theirs_trail = http.get(f"{INTAKE}/AuditEvent", params={"patient": f"Patient/{alpha.patient}", "_count": 1000},
                            timeout=5).json()
    alpha_events = [e["resource"] for e in theirs_trail["entry"] if e["resource"]["agent"][0]["altId"] == ALPHA]
    assert alpha_events  # alpha's requests are in the service's trail ...
    for query in ({"patient": f"Patient/{alpha.patient}"}, {"patient": f"Patient/{own.patient}"}, {}):
        found = beta.get(f"{INTAKE}/AuditEvent", params={**query, "_count": 1000}, timeout=5)
        assert found.status_code == 200 and ALPHA not in found.text  # ... and never in beta's
        assert {e["resource"]["agent"][0]["altId"] for e in found.json().get("entry", [])} <= {BETA}
    mine = beta.get(f"{INTAKE}/AuditEvent", params={"patient": f"Patient/{own.patient}"}, timeout=5).json()
    assert mine["total"] >= 1
    event = alpha_events[0]["id"]
    assert beta.get(f"{INTAKE}/AuditEvent/{event}", timeout=5).status_code == 404
    assert session(partner=ALPHA).get(f"{INTAKE}/AuditEvent/{event}", timeout=5).status_code == 200


def test_a_referral_partner_may_use_intake_only_and_there_its_own_types_and_the_questionnaire_catalogue(
        alpha: Submission) -> None:
    beta = session(partner=BETA)
    for base, rtype in ((CAREPLAN, "CarePlan"), (ENCOUNTERS, "Encounter"), (AFTERCARE, "Subscription")):
        for resp in (beta.get(f"{base}/{rtype}", timeout=5), beta.get(f"{base}/AuditEvent", timeout=5),
                     beta.get(f"{base}/{rtype}/x", timeout=5), beta.get(f"{base}/_history", timeout=5),
                     beta.post(base, json=dict(transaction(), type="batch"), headers=JSON, timeout=5),
                     beta.post(f"{base}/{rtype}/$validate", json={"resourceType": rtype}, headers=JSON, timeout=5)):
            assert resp.status_code == 403 and resp.json()["issue"][0]["code"] == "forbidden", (base, resp.text)
        assert beta.get(f"{base}/metadata", timeout=5).status_code == 200
    assert beta.post(f"{AFTERCARE}/Subscription/$topic-list", timeout=5).status_code == 403
    assert beta.get(f"{INTAKE}/Questionnaire", timeout=5).json()["total"] == 4
    catalogue = beta.get(f"{INTAKE}/Questionnaire", timeout=5).json()["entry"][0]["resource"]
    assert beta.get(f"{INTAKE}/Questionnaire/{catalogue['id']}", timeout=5).status_code == 200
    assert beta.put(f"{INTAKE}/Questionnaire/{catalogue['id']}", json=catalogue, headers=JSON,
                    timeout=5).status_code == 403
    assert beta.post(f"{INTAKE}/Patient/$validate", json=patient(), headers=JSON, timeout=5).status_code == 200
    for operation in (f"Patient/{alpha.patient}/$everything", "Patient/$match"):
        assert beta.post(f"{INTAKE}/{operation}", json={"resourceType": "Parameters"}, headers=JSON,
                         timeout=5).status_code == 403


def test_a_signed_token_whose_scope_claim_is_not_a_string_is_401(suite) -> None:
    for scope in (42, ["system/*.cruds", 7], {"system/*": "cruds"}):
        signed = jwt.encode({"iss": "iop-suite", "aud": "iop-suite", "sub": "x", "exp": 4102444800, "scope": scope},
                            TEST_SECRET, "HS256")
        for authorization in (f"Bearer {signed}", f"bearer   {signed}"):
            resp = requests.get(f"{INTAKE}/Patient", headers={"Authorization": authorization}, timeout=5)
            assert resp.status_code == 401 and resp.json()["resourceType"] == "OperationOutcome"
    assert requests.get(f"{INTAKE}/Questionnaire", headers={"Authorization": f"BEARER {token()}"},
                        timeout=5).status_code == 200
