"""Sample intake responses and referral-partner submissions, built from the Questionnaires intake serves.

For partners testing their integration, the demo, the benchmarks and the suite's own tests: the
answers describe a fictional adult whom triage recommends for IOP (ASAM 2.1) unless overridden.
"""
from __future__ import annotations

import uuid
from typing import Any

from services.intake.questionnaires import IOP_INTAKE_URL, PHQ9_URL, is_enabled, iter_items, load_catalogue
from shared.fhir import uscore

LOINC = "http://loinc.org"
YES = {"system": LOINC, "code": "LA33-6", "display": "Yes"}
NO = {"system": LOINC, "code": "LA32-8", "display": "No"}
FREQ = [{"system": LOINC, "code": c} for c in ("LA6568-5", "LA6569-3", "LA6570-1", "LA6571-9")]  # 0..3
VALUE_KEY = {"boolean": "valueBoolean", "integer": "valueInteger", "decimal": "valueDecimal", "date": "valueDate",
             "dateTime": "valueDateTime", "time": "valueTime", "string": "valueString", "text": "valueString",
             "choice": "valueCoding", "open-choice": "valueCoding", "quantity": "valueQuantity"}
CATALOGUE = load_catalogue()
PARTNER_SYSTEM = "https://partner.example.org/patient-id"


def default_answer(item: dict) -> Any:
    """A plausible answer: No for yes/no items, else the first option, the minimum, or a fixed value."""
    options = [option["valueCoding"] for option in item.get("answerOption", [])]
    if options:
        return NO if NO["code"] in {o["code"] for o in options} else options[0]
    minimum = next((e["valueInteger"] for e in item.get("extension", []) if e["url"].endswith("minValue")), 0)
    return {"boolean": False, "integer": minimum, "decimal": 1.5, "date": "2024-05-01", "string": "text",
            "text": "text"}[item["type"]]


def build_items(definitions: list[dict], answers: dict[str, list]) -> list[dict]:
    built = []
    for item in definitions:
        if item["type"] == "display" or not is_enabled(item, answers):
            continue
        if item["type"] == "group":
            children = build_items(item.get("item", []), answers)
            if children:
                built.append({"linkId": item["linkId"], "item": children})
        elif answers.get(item["linkId"]):
            key = VALUE_KEY[item["type"]]
            built.append({"linkId": item["linkId"], "answer": [{key: value} for value in answers[item["linkId"]]]})
    return built


def response(url: str, patient_ref: str, status: str = "completed", **overrides: list | None) -> dict:
    """A response answering every enabled question; overrides (linkId, '_' for '-') replace or drop answers."""
    questionnaire = CATALOGUE[url]
    answers = {item["linkId"]: [default_answer(item)] for item in iter_items(questionnaire["item"])
               if item["type"] not in ("group", "display")}
    answers |= {key.replace("_", "-"): value for key, value in overrides.items()}
    answers = {key: value for key, value in answers.items() if value is not None}
    items = build_items(questionnaire["item"], answers)
    answered = sum("answer" in item for item in iter_items(items))
    summary = (f"Response to {questionnaire.get('title', questionnaire['url'])} (version {questionnaire['version']}): "
               f"{status}, authored 2026-03-02T09:00:00Z, {answered} questions answered.")
    return {"resourceType": "QuestionnaireResponse", "meta": {"profile": [uscore.QUESTIONNAIRE_RESPONSE]},
            "text": uscore.div(summary), "status": status,
            "questionnaire": f"{questionnaire['url']}|{questionnaire['version']}",
            "subject": {"reference": patient_ref}, "authored": "2026-03-02T09:00:00Z", "item": items}


def phq9(scores: list[int]) -> dict[str, list]:
    return {f"phq9_q{i + 1}": [FREQ[s]] for i, s in enumerate(scores)}


def gad7(scores: list[int]) -> dict[str, list]:
    return {f"gad7_q{i + 1}": [FREQ[s]] for i, s in enumerate(scores)}


# An adult with moderate depression and anxiety, risky drinking and some drug use, safe at home,
# family involved: the assessment recommends IOP (ASAM 2.1).
IOP_CANDIDATE: dict[str, list] = {
    **phq9([2, 2, 1, 1, 2, 1, 1, 1, 0]), **gad7([2, 2, 1, 2, 1, 2, 1]),
    "administrative_sex": [{"system": "http://hl7.org/fhir/administrative-gender", "code": "female"}],
    "auditc_q1": [{"system": LOINC, "code": "LA18928-4"}], "auditc_q2": [{"system": LOINC, "code": "LA15695-2"}],
    "auditc_q3": [{"system": LOINC, "code": "LA18876-5"}],
    "dast10_q1": [YES], "dast10_q2": [YES], "dast10_q4": [YES], "dast10_q3": [YES],
    "safe_housing": [True], "family_involvement": [True],
    "available_days": [{"system": "http://hl7.org/fhir/days-of-week", "code": d} for d in ("mon", "wed", "fri")],
}


# A re-assessment two weeks in: minimal symptoms (PHQ-9 total 3, down from 11 at intake).
IMPROVED_PHQ9 = phq9([0, 1, 0, 1, 0, 0, 1, 0, 0])


def follow_up_phq9(patient_id: str) -> dict:
    return response(PHQ9_URL, f"Patient/{patient_id}", **IMPROVED_PHQ9)


def created_id(transaction_response: dict, rtype: str) -> str:
    """The id the server gave the entry of `rtype` in a transaction-response Bundle."""
    location = next(e["response"]["location"] for e in transaction_response["entry"]
                    if e["response"]["location"].startswith(rtype + "/"))
    return location.split("/")[1]


def intake_response(patient_ref: str, status: str = "completed", **overrides: list | None) -> dict:
    return response(IOP_INTAKE_URL, patient_ref, status, **{**IOP_CANDIDATE, **overrides})


def patient(identifier: str | None = None) -> dict:
    return {"resourceType": "Patient", "meta": {"profile": [uscore.PATIENT]},
            "text": uscore.div("Alex Testperson, female, born 1990-04-12."),
            "identifier": [{"system": PARTNER_SYSTEM, "value": identifier or uuid.uuid4().hex[:12]}],
            "name": [{"family": "Testperson", "given": ["Alex"]}], "gender": "female", "birthDate": "1990-04-12"}


def partner_submission(identifier: str | None = None, bundle_id: str | None = None, **overrides: list | None) -> dict:
    """A referral partner's transaction: Patient, ServiceRequest for IOP, and the intake response."""
    p, sr, qr = (f"urn:uuid:{uuid.uuid4()}" for _ in range(3))
    submission = intake_response(p, **overrides)
    submission["basedOn"] = [{"reference": sr}]
    referral = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "subject": {"reference": p},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "3457005",
                                     "display": "Patient referral"}]}, "authoredOn": "2026-03-02"}
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": p, "resource": patient(identifier), "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": sr, "resource": referral, "request": {"method": "POST", "url": "ServiceRequest"}},
        {"fullUrl": qr, "resource": submission, "request": {"method": "POST", "url": "QuestionnaireResponse"}}]}
    if bundle_id:
        bundle["identifier"] = {"system": "https://partner.example.org/submissions", "value": bundle_id}
    return bundle
