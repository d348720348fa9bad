"""Given aftercare resources, when an EHR asked for write-back, then it gets one standard R4 transaction."""
import copy
from datetime import date

import pytest
from fhir.resources.R4B.bundle import Bundle

from services.aftercare.consent import part2_notice
from services.aftercare.notifications import DS4P_DISPLAY
from services.aftercare.step_down import StepDownIds, step_down_plan
from services.aftercare.writeback import own_identifier, writeback_transaction
from shared import codes

MRN = {"system": "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14", "value": "E12345"}
PATIENT_REF = f"Patient?identifier={MRN['system']}|{MRN['value']}"


def plan_resources() -> list[dict]:
    iop = {"resourceType": "CarePlan", "id": "iop-1", "status": "completed", "intent": "plan",
           "subject": {"reference": "Patient/p1"}, "addresses": [{"reference": "Condition/oud/_history/2"}],
           "note": [{"text": "on buprenorphine"}]}
    resources = step_down_plan(iop, [], StepDownIds.derived("iop-1"), date(2025, 3, 7)).resources()
    resources[0]["meta"].update({"versionId": "3", "lastUpdated": "2025-03-07T10:00:00Z"})
    return resources


def entries_by_type(bundle: dict) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for entry in bundle["entry"]:
        found.setdefault(entry["resource"]["resourceType"], []).append(entry)
    return found


def test_transaction_parses_as_r4b_bundle():
    bundle = writeback_transaction(plan_resources(), MRN)
    Bundle.model_validate(bundle)
    assert bundle["type"] == "transaction"
    assert len(bundle["entry"]) == 7  # CarePlan, 3 Goals, therapy, support and medication referrals


def test_each_entry_is_a_conditional_update_on_our_identifier():
    for entry in writeback_transaction(plan_resources(), MRN)["entry"]:
        resource = entry["resource"]
        rtype = resource["resourceType"]
        assert "id" not in resource
        mine = next(i for i in resource["identifier"] if i["system"] == f"{codes.IOP_IDENTIFIER}/{rtype}")
        assert entry["request"] == {"method": "PUT", "url": f"{rtype}?identifier={mine['system']}|{mine['value']}"}
        assert entry["fullUrl"].startswith("urn:uuid:")


def test_the_careplan_identifier_carries_our_id():
    careplan = entries_by_type(writeback_transaction(plan_resources(), MRN))["CarePlan"][0]
    assert own_identifier("CarePlan", "iop-1-aftercare") in careplan["resource"]["identifier"]
    assert careplan["request"]["url"] == ("CarePlan?identifier=https://iop-suite.org/fhir/NamingSystem/CarePlan"
                                          "|iop-1-aftercare")


def test_patient_references_become_conditional_references():
    bundle = writeback_transaction(plan_resources(), MRN)
    subjects = {e["resource"]["subject"]["reference"] for e in bundle["entry"]}
    assert subjects == {PATIENT_REF}
    assert "Patient/p1" not in str(bundle)


def test_references_inside_the_bundle_become_urn_uuids():
    bundle = writeback_transaction(plan_resources(), MRN)
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    careplan = entries_by_type(bundle)["CarePlan"][0]["resource"]
    goal_refs = [g["reference"] for g in careplan["goal"]]
    activity_refs = [a["reference"]["reference"] for a in careplan["activity"] if "reference" in a]
    assert set(goal_refs) | set(activity_refs) <= full_urls
    for request in entries_by_type(bundle)["ServiceRequest"]:
        assert request["resource"]["basedOn"][0]["reference"] == entries_by_type(bundle)["CarePlan"][0]["fullUrl"]


def test_references_to_our_other_resources_become_conditional_on_our_identifier():
    careplan = entries_by_type(writeback_transaction(plan_resources(), MRN))["CarePlan"][0]["resource"]
    assert careplan["basedOn"] == [{"reference": "CarePlan?identifier=https://iop-suite.org/fhir/NamingSystem/CarePlan|iop-1"}]
    assert careplan["addresses"] == [{"reference": "Condition?identifier=https://iop-suite.org/fhir/NamingSystem/Condition|oud"}]


def test_logical_references_instead_never_fail_on_a_missing_target():
    bundle = writeback_transaction(plan_resources(), MRN, logical_refs=True)
    Bundle.model_validate(bundle)
    careplan = entries_by_type(bundle)["CarePlan"][0]["resource"]
    assert careplan["basedOn"] == [{"type": "CarePlan", "identifier": own_identifier("CarePlan", "iop-1")}]
    assert careplan["subject"] == {"reference": PATIENT_REF}


def test_server_metadata_is_dropped_and_labels_and_notice_kept():
    bundle = writeback_transaction(plan_resources(), MRN)
    for entry in bundle["entry"]:
        meta = entry["resource"]["meta"]
        assert "versionId" not in meta and "lastUpdated" not in meta
        assert meta["security"] == codes.PART2_LABELS
        assert meta["extension"] == [{"url": DS4P_DISPLAY, "valueAnnotation": {"text": part2_notice()}}]
    assert bundle["meta"]["security"] == codes.PART2_LABELS


def test_contained_and_already_conditional_references_are_left_alone():
    goal = {"resourceType": "Goal", "id": "g1", "lifecycleStatus": "active", "description": {"text": "x"},
            "subject": {"reference": "Patient?identifier=a|b"}, "expressedBy": {"reference": "#author"},
            "contained": [{"resourceType": "Practitioner", "id": "author"}]}
    resource = writeback_transaction([goal], MRN)["entry"][0]["resource"]
    assert resource["subject"] == {"reference": "Patient?identifier=a|b"}
    assert resource["expressedBy"] == {"reference": "#author"}


def test_the_same_change_yields_the_same_entries_and_inputs_are_untouched():
    resources = plan_resources()
    original = copy.deepcopy(resources)
    first, second = writeback_transaction(resources, MRN), writeback_transaction(resources, MRN)
    assert first["entry"] == second["entry"]
    assert resources == original


def test_existing_identifiers_are_kept_and_ours_added_once():
    resources = plan_resources()
    resources[0]["identifier"] = [{"system": "urn:ehr", "value": "7"}, own_identifier("CarePlan", "iop-1-aftercare")]
    identifiers = writeback_transaction(resources, MRN)["entry"][0]["resource"]["identifier"]
    assert identifiers == [{"system": "urn:ehr", "value": "7"}, own_identifier("CarePlan", "iop-1-aftercare")]


def test_single_identifier_resources_get_an_identifier_object():
    response = {"resourceType": "QuestionnaireResponse", "id": "qr1", "status": "completed",
                "subject": {"reference": "Patient/p1"}}
    bundle = writeback_transaction([response], MRN)
    Bundle.model_validate(bundle)
    assert bundle["entry"][0]["resource"]["identifier"] == own_identifier("QuestionnaireResponse", "qr1")


def test_patient_is_never_written_back_and_identifier_is_required():
    with pytest.raises(ValueError):
        writeback_transaction([{"resourceType": "Patient", "id": "p1"}], MRN)
    with pytest.raises(ValueError):
        writeback_transaction(plan_resources(), {"value": "E12345"})
