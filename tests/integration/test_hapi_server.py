"""Given a standard FHIR R4 server, when our write-back transactions arrive, then it accepts them.

The server is HAPI FHIR's own plain server (tests/support/hapi), independent of our code: HAPI parses the JSON
strictly, validates every request against the R4 core profiles and resolves conditional updates, urn:uuid:
and conditional references, so a Bundle it accepts is one a standard server accepts. Each test uses its own
patient and identifiers, so the tests do not depend on one another or on their order.
"""
from __future__ import annotations

import json
import uuid
from datetime import date

import pytest
import requests

from services.aftercare.step_down import StepDownIds, step_down_plan
from services.aftercare.writeback import own_identifier, writeback_transaction
from shared import codes
from tests.support.hapi_server import HapiServer
from tests.support.ports import port

PORT = port(18090)
FHIR_JSON = "application/fhir+json"
MRN_SYSTEM = "https://hospital.example.org/mrn"
CAREPLAN_IDS = f"{codes.IOP_IDENTIFIER}/CarePlan"
GOAL_IDS = f"{codes.IOP_IDENTIFIER}/Goal"
GRADUATION = date(2025, 3, 7)


@pytest.fixture
def ehr(hapi: HapiServer) -> HapiServer:
    return hapi


def post(url: str, body: dict) -> requests.Response:
    return requests.post(url, data=json.dumps(body), timeout=60,
                         headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON})


def transaction(ehr: HapiServer, bundle: dict) -> requests.Response:
    return post(ehr.base_url, bundle)


def search(ehr: HapiServer, resource_type: str, system: str, value: str) -> dict:
    response = requests.get(f"{ehr.base_url}/{resource_type}", params={"identifier": f"{system}|{value}"},
                            headers={"Accept": FHIR_JSON}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def only(searchset: dict) -> dict:
    assert searchset["total"] == 1, searchset
    return searchset["entry"][0]["resource"]


def create_patient(ehr: HapiServer, mrn: str) -> str:
    patient = {"resourceType": "Patient", "identifier": [{"system": MRN_SYSTEM, "value": mrn}],
               "name": [{"family": "Rivera", "given": ["Alice"]}], "birthDate": "1988-04-12"}
    response = post(f"{ehr.base_url}/Patient", patient)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def locations(response_bundle: dict) -> list[str]:
    """Type/id of each entry of a transaction-response, without the version."""
    return [e["response"]["location"].split("/_history/")[0] for e in response_bundle["entry"]]


def statuses(response_bundle: dict) -> list[str]:
    return [e["response"]["status"] for e in response_bundle["entry"]]


def conditional_put(full_url: str, resource: dict, system: str) -> dict:
    value = next(i["value"] for i in resource["identifier"] if i["system"] == system)
    return {"fullUrl": full_url, "resource": resource,
            "request": {"method": "PUT", "url": f"{resource['resourceType']}?identifier={system}|{value}"}}


def careplan_bundle(key: str, mrn: str) -> dict:
    """Shaped like ours: a CarePlan and two Goals as conditional updates, goals as urn:uuid: references."""
    patient = {"reference": f"Patient?identifier={MRN_SYSTEM}|{mrn}"}
    urls = [f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{CAREPLAN_IDS}/{key}/{n}')}" for n in range(3)]
    goals = [{"resourceType": "Goal", "identifier": [{"system": GOAL_IDS, "value": f"{key}-g{n}"}],
              "lifecycleStatus": "active", "description": {"text": f"Aftercare goal {n}"}, "subject": patient}
             for n in (1, 2)]
    careplan = {"resourceType": "CarePlan", "identifier": [{"system": CAREPLAN_IDS, "value": key}],
                "status": "active", "intent": "plan", "title": "Aftercare", "subject": patient,
                "goal": [{"reference": urls[1]}, {"reference": urls[2]}]}
    return {"resourceType": "Bundle", "type": "transaction",
            "entry": [conditional_put(urls[0], careplan, CAREPLAN_IDS),
                      *(conditional_put(url, goal, GOAL_IDS) for url, goal in zip(urls[1:], goals, strict=True))]}


def assert_refused(response: requests.Response, status: int, *mentions: str) -> None:
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert any(i["severity"] == "error" for i in outcome["issue"])
    diagnostics = " ".join(i.get("diagnostics", "") for i in outcome["issue"])
    for mention in mentions:
        assert mention in diagnostics, diagnostics


# Inputs for our own code, as a graduated IOP episode looks in the suite (Patient/p1 is ours, not the EHR's).

def condition(condition_id: str) -> dict:
    return {"resourceType": "Condition", "id": condition_id,
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                               "code": "confirmed"}]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F11.20",
                                 "display": "Opioid dependence, uncomplicated"}], "text": "Opioid use disorder"},
            "subject": {"reference": "Patient/p1"}, "onsetDateTime": "2024-11-02"}


def iop_goal(goal_id: str, achievement: str) -> dict:
    return {"resourceType": "Goal", "id": goal_id, "lifecycleStatus": "active",
            "achievementStatus": {"coding": [{"system": codes.GOAL_ACHIEVEMENT, "code": achievement}]},
            "description": {"text": "Depressive symptoms in the minimal range (PHQ-9 below 5)"},
            "subject": {"reference": "Patient/p1"},
            "target": [{"measure": {"coding": [{"system": codes.LOINC, "code": codes.PHQ9_TOTAL}]},
                        "detailQuantity": {"value": 5, "comparator": "<"}, "dueDate": "2025-03-01"}]}


def iop_episode(key: str) -> tuple[dict, list[dict], dict]:
    """The graduated IOP CarePlan, its goals (one to carry forward, one achieved) and the condition it treats."""
    goals = [iop_goal(f"{key}-phq9", "improving"), iop_goal(f"{key}-abstinence", "achieved")]
    plan = {"resourceType": "CarePlan", "id": key, "status": "completed", "intent": "plan",
            "title": "Intensive outpatient program", "subject": {"reference": "Patient/p1"},
            "period": {"start": "2024-12-13", "end": GRADUATION.isoformat()},
            "addresses": [{"reference": f"Condition/{key}-oud/_history/2"}],
            "goal": [{"reference": f"Goal/{g['id']}"} for g in goals],
            "activity": [{"detail": {"status": "completed", "description": "Group therapy 3x/week"}},
                         {"detail": {"kind": "MedicationRequest", "status": "completed",
                                     "productCodeableConcept": {"text": "buprenorphine/naloxone sublingual film"},
                                     "description": "Buprenorphine maintenance"}}],
            "note": [{"text": "Graduated from IOP"}]}
    return plan, goals, condition(f"{key}-oud")


def mrn(value: str) -> dict:
    return {"system": MRN_SYSTEM, "value": value}


def test_the_server_is_a_standard_r4_server_with_transactions(ehr):
    response = requests.get(f"{ehr.base_url}/metadata", headers={"Accept": FHIR_JSON}, timeout=30)
    assert response.status_code == 200
    capabilities = response.json()
    assert (capabilities["resourceType"], capabilities["fhirVersion"]) == ("CapabilityStatement", "4.0.1")
    assert "HAPI" in capabilities["software"]["name"]
    assert {"code": "transaction"} in capabilities["rest"][0]["interaction"]


def test_a_conditional_update_transaction_resolves_every_reference(ehr):
    patient_id = create_patient(ehr, "12345")
    response = transaction(ehr, careplan_bundle("cp-1", "12345"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["resourceType"], body["type"]) == ("Bundle", "transaction-response")
    assert statuses(body) == ["201 Created"] * 3
    careplan_ref, *goal_refs = locations(body)
    careplan = only(search(ehr, "CarePlan", CAREPLAN_IDS, "cp-1"))
    assert f"CarePlan/{careplan['id']}" == careplan_ref
    assert careplan["subject"] == {"reference": f"Patient/{patient_id}"}
    assert careplan["goal"] == [{"reference": ref} for ref in goal_refs]
    for n, ref in enumerate(goal_refs, start=1):
        goal = only(search(ehr, "Goal", GOAL_IDS, f"cp-1-g{n}"))
        assert f"Goal/{goal['id']}" == ref
        assert goal["subject"] == {"reference": f"Patient/{patient_id}"}


def test_resending_the_same_transaction_updates_instead_of_duplicating(ehr):
    create_patient(ehr, "23456")
    bundle = careplan_bundle("cp-2", "23456")
    first, second = transaction(ehr, bundle), transaction(ehr, bundle)
    assert (first.status_code, second.status_code) == (200, 200), second.text
    assert statuses(second.json()) == ["200 OK"] * 3
    assert locations(second.json()) == locations(first.json())
    assert [e["response"]["etag"] for e in second.json()["entry"]] == ['W/"2"'] * 3
    assert only(search(ehr, "CarePlan", CAREPLAN_IDS, "cp-2"))["meta"]["versionId"] == "2"
    for n in (1, 2):
        assert search(ehr, "Goal", GOAL_IDS, f"cp-2-g{n}")["total"] == 1


def test_a_conditional_reference_to_an_unknown_patient_refuses_the_whole_transaction(ehr):
    response = transaction(ehr, careplan_bundle("cp-3", "no-such-mrn"))
    assert 400 <= response.status_code < 500
    assert_refused(response, 404, f"Patient?identifier={MRN_SYSTEM}|no-such-mrn", "No resources match")
    assert search(ehr, "CarePlan", CAREPLAN_IDS, "cp-3")["total"] == 0
    assert search(ehr, "Goal", GOAL_IDS, "cp-3-g1")["total"] == 0


def test_an_invalid_resource_is_refused_by_request_validation(ehr):
    create_patient(ehr, "34567")
    bundle = careplan_bundle("cp-4", "34567")
    del bundle["entry"][0]["resource"]["status"]  # CarePlan.status is 1..1
    assert_refused(transaction(ehr, bundle), 422, "CarePlan.status")
    assert search(ehr, "CarePlan", CAREPLAN_IDS, "cp-4")["total"] == 0


def test_our_writeback_with_logical_references_is_accepted(ehr):
    patient_id = create_patient(ehr, "45678")
    plan, goals, _ = iop_episode("iop-a")
    resources = step_down_plan(plan, goals, StepDownIds.derived("iop-a"), GRADUATION).resources()
    bundle = writeback_transaction(resources, mrn("45678"), logical_refs=True, bundle_id="writeback-logical")
    response = transaction(ehr, bundle)
    assert response.status_code == 200, response.text
    assert statuses(response.json()) == ["201 Created"] * len(resources)
    created = dict(zip((f"{r['resourceType']}/{r['id']}" for r in resources), locations(response.json()),
                       strict=True))
    careplan = only(search(ehr, "CarePlan", CAREPLAN_IDS, "iop-a-aftercare"))
    assert careplan["subject"] == {"reference": f"Patient/{patient_id}"}
    assert careplan["basedOn"] == [{"type": "CarePlan", "identifier": own_identifier("CarePlan", "iop-a")}]
    assert careplan["goal"] == [{"reference": created[g["reference"]]} for g in resources[0]["goal"]]
    for referral in (r for r in resources if r["resourceType"] == "ServiceRequest"):
        stored = only(search(ehr, "ServiceRequest", f"{codes.IOP_IDENTIFIER}/ServiceRequest", referral["id"]))
        assert stored["basedOn"] == [{"reference": created["CarePlan/iop-a-aftercare"]}]
        assert stored["subject"] == {"reference": f"Patient/{patient_id}"}


def test_our_default_writeback_resolves_against_what_was_written_back_before(ehr):
    create_patient(ehr, "56789")
    plan, goals, oud = iop_episode("iop-b")
    resources = step_down_plan(plan, goals, StepDownIds.derived("iop-b"), GRADUATION).resources()
    aftercare = writeback_transaction(resources, mrn("56789"), bundle_id="writeback-aftercare")

    # The aftercare plan refers to the IOP plan, its condition and goals: a server without them refuses it all.
    assert_refused(transaction(ehr, aftercare), 404, f"CarePlan?identifier={CAREPLAN_IDS}|iop-b", "No resources match")
    assert search(ehr, "CarePlan", CAREPLAN_IDS, "iop-b-aftercare")["total"] == 0

    earlier = transaction(ehr, writeback_transaction([oud, plan, *goals], mrn("56789"), bundle_id="writeback-iop"))
    assert earlier.status_code == 200, earlier.text
    condition_ref, plan_ref, *goal_refs = locations(earlier.json())
    response = transaction(ehr, aftercare)
    assert response.status_code == 200, response.text
    assert statuses(response.json()) == ["201 Created"] * len(resources)

    careplan = only(search(ehr, "CarePlan", CAREPLAN_IDS, "iop-b-aftercare"))
    assert careplan["basedOn"] == careplan["replaces"] == [{"reference": plan_ref}]
    assert careplan["addresses"] == [{"reference": condition_ref}]
    carried = next(r for r in resources if r["resourceType"] == "Goal" and "extension" in r)
    stored = only(search(ehr, "Goal", GOAL_IDS, carried["id"]))
    assert stored["extension"][0]["extension"][1]["valueReference"] == {"reference": goal_refs[0]}  # iop-b-phq9
