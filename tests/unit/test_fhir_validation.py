"""Validation of FHIR R4 JSON at the edge: what a hospital's EHR or a referral partner sends us."""
from __future__ import annotations

import copy
import json

import pytest
from fhir.resources.R4B import get_fhir_model_class

from shared.codes import PART2_LABELS, SNOMED, V3_ACT_CODE
from shared.fhir.bindings import REQUIRED_BINDINGS
from shared.fhir.outcome import FhirError
from shared.fhir.validation import (
    bundle_entry_errors,
    check_id,
    parse_json,
    validate_bundle_entries,
    validate_resource,
)

PHI = "SECRET-NAME"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"


def care_plan() -> dict:
    return {
        "resourceType": "CarePlan",
        "id": "iop-plan-1",
        "meta": {"versionId": "1", "lastUpdated": "2024-05-01T10:00:00.000Z", "security": PART2_LABELS},
        "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">IOP treatment plan</div>'},
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/workflow-episodeOfCare",
                       "valueReference": {"reference": "EpisodeOfCare/eoc-1"}}],
        "identifier": [{"use": "official", "system": "https://iop-suite.org/fhir/NamingSystem/careplan", "value": "1"}],
        "status": "active",
        "intent": "plan",
        "category": [{"coding": [{"system": "http://hl7.org/fhir/us/core/CodeSystem/careplan-category",
                                  "code": "assess-plan"}]}],
        "title": "IOP treatment plan",
        "subject": {"reference": "Patient/p-1", "display": "Patient"},
        "period": {"start": "2024-05-01", "end": "2024-07-01"},
        "created": "2024-05-01T09:00:00Z",
        "goal": [{"reference": "Goal/g-1"}],
        "supportingInfo": [{"reference": "QuestionnaireResponse/qr-1/_history/2"}],
        "contained": [{"resourceType": "Goal", "id": "local-goal", "lifecycleStatus": "proposed",
                       "description": {"text": "Attend every group session"},
                       "subject": {"reference": "Patient/p-1"}}],
        "activity": [
            {"detail": {
                "kind": "Appointment",
                "code": {"coding": [{"system": SNOMED, "code": "76168009", "display": "Group psychotherapy"}]},
                "status": "scheduled",
                "scheduledTiming": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "wk",
                                               "dayOfWeek": ["mon", "wed", "fri"], "duration": 3,
                                               "durationUnit": "h"}},
                "performer": [{"reference": "Practitioner/pr-1"}],
                "goal": [{"reference": "#local-goal"}],
                "description": "Group therapy three times a week",
            }},
            {"outcomeReference": [{"reference": "Encounter/e-1"}],
             "progress": [{"time": "2024-05-03T10:00:00Z", "text": "Attended"}],
             "detail": {"kind": "ServiceRequest", "status": "in-progress", "scheduledPeriod": {"start": "2024-05-01"},
                        "dailyAmount": {"value": 1.5, "unit": "h"}}},
        ],
        "note": [{"authorReference": {"reference": "Practitioner/pr-1"}, "time": "2024-05-01T09:00:00+02:00",
                  "text": "Plan agreed with the patient"}],
    }


def encounter() -> dict:
    return {
        "resourceType": "Encounter",
        "id": "e-1",
        "status": "finished",
        "statusHistory": [{"status": "planned", "period": {"start": "2024-04-30T09:00:00Z",
                                                          "end": "2024-05-03T09:00:00Z"}}],
        "class": {"system": V3_ACT_CODE, "code": "AMB", "display": "ambulatory"},
        "type": [{"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "90853"}]}],
        "subject": {"reference": "Patient/p-1"},
        "episodeOfCare": [{"reference": "EpisodeOfCare/eoc-1"}],
        "basedOn": [{"reference": "CarePlan/iop-plan-1"}],
        "participant": [{"individual": {"reference": "Practitioner/pr-1"}}],
        "period": {"start": "2024-05-03T09:00:00Z", "end": "2024-05-03T12:00:00Z"},
        "length": {"value": 180, "unit": "min", "system": "http://unitsofmeasure.org", "code": "min"},
        "location": [{"location": {"reference": "Location/clinic"}, "status": "completed"}],
    }


def goal() -> dict:
    return {
        "resourceType": "Goal",
        "id": "g-1",
        "lifecycleStatus": "active",
        "achievementStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/goal-achievement",
                                          "code": "in-progress"}]},
        "description": {"text": "Keep the AUDIT-C score below 3"},
        "subject": {"reference": "Patient/p-1"},
        "startDate": "2024-05-01",
        "target": [{"measure": {"coding": [{"system": "http://loinc.org", "code": "75626-2"}]},
                    "detailQuantity": {"value": 3, "comparator": "<", "system": "http://unitsofmeasure.org",
                                       "code": "{score}"},
                    "dueDate": "2024-07-01"}],
    }


def questionnaire_response() -> dict:
    return {
        "resourceType": "QuestionnaireResponse",
        "id": "qr-1",
        "questionnaire": "https://iop-suite.org/fhir/Questionnaire/iop-intake|1.0",
        "status": "completed",
        "subject": {"reference": "Patient/p-1"},
        "authored": "2024-05-01T08:30:00Z",
        "item": [
            {"linkId": "phq9", "text": "PHQ-9", "item": [
                {"linkId": "phq9-1", "answer": [{"valueCoding": {"system": "http://loinc.org", "code": "LA6568-5"}}]},
                {"linkId": "phq9-total", "answer": [{"valueInteger": 12}]},
            ]},
            {"linkId": "consent-to-treat", "answer": [{"valueBoolean": True}]},
            {"linkId": "weight", "answer": [{"valueDecimal": 72.5}]},
            {"linkId": "last-use", "answer": [{"valueDate": "2024-04-28"}]},
        ],
    }


def consent() -> dict:
    return {
        "resourceType": "Consent",
        "id": "consent-1",
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p-1"},
        "dateTime": "2024-05-01T08:00:00Z",
        "policyRule": {"coding": [{"system": V3_ACT_CODE, "code": "OPTIN"}]},
        "provision": {
            "type": "permit",
            "period": {"start": "2024-05-01", "end": "2025-05-01"},
            "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                            "code": "IRCP"}]},
                       "reference": {"reference": "Organization/ehr-1"}}],
            "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction",
                                    "code": "disclose"}]}],
            "securityLabel": [{"system": V3_ACT_CODE, "code": "42CFRPart2"}],
        },
    }


def subscription() -> dict:
    return {
        "resourceType": "Subscription",
        "id": "sub-1",
        "meta": {"profile": [f"{BACKPORT}/backport-subscription"]},
        "status": "requested",
        "reason": "Aftercare notifications for the EHR",
        "end": "2025-01-01T00:00:00Z",
        "criteria": "https://iop-suite.org/fhir/SubscriptionTopic/careplan-graduated",
        "_criteria": {"extension": [{"url": f"{BACKPORT}/backport-filter-criteria",
                                     "valueString": "CarePlan?patient=Patient/p-1"}]},
        "channel": {
            "extension": [{"url": f"{BACKPORT}/backport-heartbeat-period", "valueUnsignedInt": 86400},
                          {"url": f"{BACKPORT}/backport-max-count", "valuePositiveInt": 20}],
            "type": "rest-hook",
            "endpoint": "https://ehr.example.org/fhir/notify",
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": f"{BACKPORT}/backport-payload-content", "valueCode": "id-only"}]},
            "header": ["Authorization: Bearer abc"],
        },
    }


def referral_transaction() -> dict:
    patient_url = "urn:uuid:6f1c1f0e-3b1a-4c55-9d3e-2f6f0c9a1b11"
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "identifier": {"system": "https://partner.example.org/referrals", "value": "r-1"},
        "entry": [
            {"fullUrl": patient_url,
             "resource": {"resourceType": "Patient", "identifier": [{"system": "https://partner.example.org/mrn",
                                                                    "value": "123"}],
                          "name": [{"family": "Doe", "given": ["Jo"]}], "gender": "female",
                          "birthDate": "1990-02-01"},
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=123"}},
            {"fullUrl": "urn:uuid:0c7f1a52-8d0e-4c1e-8a57-5b7d7d6f2a22",
             "resource": {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                          "priority": "routine", "subject": {"reference": patient_url},
                          "requester": {"reference": "Organization?identifier=https://partner.example.org|p"},
                          "code": {"text": "Intensive outpatient program"}},
             "request": {"method": "POST", "url": "ServiceRequest"}},
            {"request": {"method": "GET", "url": "Patient?identifier=123"}},
        ],
    }


def issues_of(excinfo: pytest.ExceptionInfo[FhirError]) -> list[tuple[str | None, str]]:
    return [(issue.expression, issue.code) for issue in excinfo.value.issues]


def rejected(data: dict, expected_type: str | None = None) -> FhirError:
    with pytest.raises(FhirError) as excinfo:
        validate_resource(data, expected_type)
    return excinfo.value


def expressions(error: FhirError) -> set[str | None]:
    return {issue.expression for issue in error.issues}


# --- valid resources pass, and the very same dict comes back ------------------------------------------------------


@pytest.mark.parametrize("make", [care_plan, encounter, goal, questionnaire_response, consent, subscription,
                                  referral_transaction])
def test_a_valid_resource_is_returned_as_the_same_unchanged_dict(make):
    resource = make()
    before = copy.deepcopy(resource)

    assert validate_resource(resource, resource["resourceType"]) is resource
    assert resource == before


def test_a_valid_resource_survives_the_wire():
    body = json.dumps(care_plan()).encode()

    assert validate_resource(parse_json(body), "CarePlan") == care_plan()


# --- parse_json: malformed bodies are 400 "structure" -------------------------------------------------------------


@pytest.mark.parametrize("body", [
    b'{"resourceType": "Patient",',
    b"",
    b"\xff\xfe{}",
    b"[]",
    b'"Patient"',
    b"null",
    b'{"resourceType": "Observation", "valueQuantity": {"value": NaN}}',
    b'{"a": Infinity}',
    b'{"a": ' + b"9" * 5000 + b"}",
])
def test_a_malformed_body_is_400_structure(body):
    with pytest.raises(FhirError) as excinfo:
        parse_json(body)

    assert excinfo.value.status == 400
    assert [issue.code for issue in excinfo.value.issues] == ["structure"]


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 100_000, b"[" * 100_000 + b"]" * 100_000])
def test_pathological_nesting_is_400_without_recursion_error(body):
    with pytest.raises(FhirError) as excinfo:
        parse_json(body)

    assert excinfo.value.status == 400
    assert excinfo.value.issues[0].code == "structure"


def test_nesting_up_to_the_limit_is_accepted_and_brackets_in_strings_do_not_count():
    at_limit = b'{"a":' * 9 + b"[]" + b"}" * 9
    brackets_in_text = json.dumps({"resourceType": "Basic", "note": "[[[{{{" * 100 + '\\"[['}).encode()

    assert parse_json(at_limit, max_depth=10)
    assert parse_json(brackets_in_text, max_depth=10)["resourceType"] == "Basic"
    with pytest.raises(FhirError):
        parse_json(b'{"a":' * 10 + b"[]" + b"}" * 10, max_depth=10)


def test_a_utf8_body_with_a_byte_order_mark_parses():
    assert parse_json(b'\xef\xbb\xbf{"resourceType": "Patient", "name": [{"family": "M\xc3\xbcller"}]}')


# --- resourceType -------------------------------------------------------------------------------------------------


def test_a_resource_without_resource_type_is_400():
    resource = care_plan()
    del resource["resourceType"]

    error = rejected(resource, "CarePlan")

    assert error.status == 400
    assert error.issues[0].code == "structure"


def test_a_resource_of_another_type_than_the_endpoint_is_422():
    error = rejected(goal(), "CarePlan")

    assert error.status == 422
    assert [(i.expression, i.code) for i in error.issues] == [("resourceType", "invalid")]


@pytest.mark.parametrize("resource_type", ["Foo", "SubscriptionTopic", "MedicinalProduct", PHI])
def test_an_unknown_resource_type_is_422_not_supported(resource_type):
    error = rejected({"resourceType": resource_type})

    assert error.status == 422
    assert error.issues[0].code == "not-supported"


# --- the model: unknown elements, formats, required elements ------------------------------------------------------


def test_an_unknown_element_is_422_with_its_path():
    resource = care_plan()
    resource["priority"] = "high"
    resource["activity"][0]["detail"]["colour"] = {"text": "blue"}

    error = rejected(resource, "CarePlan")

    assert error.status == 422
    assert ("CarePlan.priority", "structure") in issues_of_error(error)
    assert ("CarePlan.activity[0].detail.colour", "structure") in issues_of_error(error)


def test_python_field_names_are_not_json_element_names():
    resource = encounter()
    resource["class_fhir"] = resource.pop("class")

    error = rejected(resource, "Encounter")

    assert ("Encounter.class_fhir", "structure") in issues_of_error(error)
    assert ("Encounter.class", "required") in issues_of_error(error)


def test_an_invalid_date_is_422_with_its_path():
    resource = care_plan()
    resource["period"]["start"] = "2024-13-45"

    error = rejected(resource, "CarePlan")

    assert error.status == 422
    assert issues_of_error(error) == [("CarePlan.period.start", "invalid")]
    assert "dateTime" in error.issues[0].diagnostics


def test_an_impossible_birth_date_is_422():
    error = rejected({"resourceType": "Patient", "birthDate": "1990-02-30"})

    assert issues_of_error(error) == [("Patient.birthDate", "invalid")]


@pytest.mark.parametrize(("element", "value"), [
    ("active", "true"), ("active", 1), ("multipleBirthInteger", "3"), ("multipleBirthInteger", 2.5),
    ("birthDate", 19900201),
])
def test_a_wrong_json_type_is_422_even_where_pydantic_would_coerce(element, value):
    error = rejected({"resourceType": "Patient", element: value})

    assert expressions(error) == {f"Patient.{element}"}


def test_each_missing_required_element_is_an_issue():
    error = rejected({"resourceType": "CarePlan"}, "CarePlan")

    assert sorted(issues_of_error(error)) == [
        ("CarePlan.intent", "required"), ("CarePlan.status", "required"), ("CarePlan.subject", "required"),
    ]


def test_a_required_primitive_may_be_replaced_by_an_extension():
    resource = care_plan()
    del resource["status"]
    resource["_status"] = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                                          "valueCode": "unknown"}]}

    assert validate_resource(resource) is resource


def test_two_choices_of_one_element_are_an_issue():
    resource = care_plan()
    resource["activity"][0]["detail"]["scheduledString"] = "Mondays"

    error = rejected(resource)

    assert expressions(error) == {"CarePlan.activity[0].detail.scheduledString"}


def test_nulls_and_empty_arrays_are_not_fhir_json():
    resource = care_plan()
    resource["title"] = None
    resource["note"] = []
    resource["goal"] = [None]

    error = rejected(resource)

    assert expressions(error) == {"CarePlan.title", "CarePlan.note", "CarePlan.goal[0]"}


def test_nulls_align_primitive_arrays_with_their_extensions():
    patient = {"resourceType": "Patient", "name": [{"given": ["Jo", None], "_given": [None, {"extension": [
        {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "masked"}]}]}]}

    assert validate_resource(patient) is patient


def test_several_problems_give_one_issue_each():
    resource = care_plan()
    del resource["intent"]
    resource["created"] = "yesterday"
    resource["status"] = "ongoing"
    resource["activity"][1]["detail"]["status"] = "done"
    resource["favourite"] = True
    resource["subject"]["reference"] = "patient 1"

    error = rejected(resource, "CarePlan")

    assert sorted(issues_of_error(error)) == [
        ("CarePlan.activity[1].detail.status", "code-invalid"),
        ("CarePlan.created", "invalid"),
        ("CarePlan.favourite", "structure"),
        ("CarePlan.intent", "required"),
        ("CarePlan.status", "code-invalid"),
        ("CarePlan.subject.reference", "invalid"),
    ]


# --- required bindings --------------------------------------------------------------------------------------------


def test_a_status_outside_the_value_set_is_code_invalid_naming_the_allowed_codes():
    resource = care_plan()
    resource["status"] = "ongoing"

    error = rejected(resource, "CarePlan")

    assert error.status == 422
    assert issues_of_error(error) == [("CarePlan.status", "code-invalid")]
    assert "draft, active, on-hold, revoked, completed, entered-in-error, unknown" in error.issues[0].diagnostics


def test_a_wrong_activity_detail_status_points_at_the_activity():
    resource = care_plan()
    resource["activity"][1]["detail"]["status"] = "active"

    error = rejected(resource, "CarePlan")

    assert issues_of_error(error) == [("CarePlan.activity[1].detail.status", "code-invalid")]
    assert "not-started" in error.issues[0].diagnostics


@pytest.mark.parametrize(("resource", "change", "expression"), [
    ({"resourceType": "Patient"}, {"gender": "F"}, "Patient.gender"),
    (encounter(), {"status": "completed"}, "Encounter.status"),
    (goal(), {"lifecycleStatus": "achieved"}, "Goal.lifecycleStatus"),
    (consent(), {"status": "permit"}, "Consent.status"),
    (subscription(), {"status": "entered-in-error"}, "Subscription.status"),
    (questionnaire_response(), {"status": "done"}, "QuestionnaireResponse.status"),
    ({"resourceType": "Flag", "status": "open", "code": {"text": "risk"}, "subject": {"reference": "Patient/p-1"}},
     {}, "Flag.status"),
    ({"resourceType": "Task", "status": "requested", "intent": "proposed"}, {}, "Task.intent"),
    ({"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2024-05-01T10:00:00Z", "action": "X",
      "agent": [{"requestor": True}], "source": {"observer": {"reference": "Device/d"}}}, {}, "AuditEvent.action"),
])
def test_required_bindings_of_the_types_the_suite_owns(resource, change, expression):
    error = rejected(dict(resource, **change))

    assert issues_of_error(error) == [(expression, "code-invalid")]


def test_bindings_hold_in_nested_items_and_backbone_elements():
    questionnaire = {"resourceType": "Questionnaire", "status": "active", "item": [
        {"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "question"}]}]}
    episode = {"resourceType": "EpisodeOfCare", "status": "active", "patient": {"reference": "Patient/p-1"},
               "statusHistory": [{"status": "on-hold", "period": {"start": "2024-05-01"}}]}
    service_request = {"resourceType": "ServiceRequest", "status": "active", "intent": "referral",
                       "priority": "soon", "subject": {"reference": "Patient/p-1"}}
    subscription_ = subscription()
    subscription_["channel"]["type"] = "webhook"

    assert issues_of_error(rejected(questionnaire)) == [("Questionnaire.item[0].item[0].type", "code-invalid")]
    assert issues_of_error(rejected(episode)) == [("EpisodeOfCare.statusHistory[0].status", "code-invalid")]
    assert sorted(issues_of_error(rejected(service_request))) == [
        ("ServiceRequest.intent", "code-invalid"), ("ServiceRequest.priority", "code-invalid")]
    assert issues_of_error(rejected(subscription_)) == [("Subscription.channel.type", "code-invalid")]


def test_every_binding_names_an_element_of_the_models():
    for class_name, element in REQUIRED_BINDINGS:
        model = get_fhir_model_class(class_name)
        assert element in {field.alias for field in model.model_fields.values()}, (class_name, element)


@pytest.mark.parametrize(("element", "value"), [
    ("implicitRules", "http://example.org/rules v2"), ("language", " en"), ("meta", {"profile": ["http://x.org/ p"]}),
])
def test_uris_and_codes_hold_no_whitespace(element, value):
    error = rejected({"resourceType": "Patient", element: value})

    assert len(error.issues) == 1
    assert error.issues[0].expression.startswith(f"Patient.{element}")


# --- references and ids -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reference", [
    "Patient/p-1", "Patient/p-1/_history/3", "https://ehr.example.org/fhir/Patient/9", "http://x.org/Patient/1",
    "urn:uuid:6f1c1f0e-3b1a-4c55-9d3e-2f6f0c9a1b11", "urn:oid:2.16.840.1.113883.4.642", "#local-goal", "#",
])
def test_accepted_reference_forms(reference):
    resource = care_plan()
    resource["subject"]["reference"] = reference

    assert validate_resource(resource) is resource


@pytest.mark.parametrize("reference", [
    "patient 1", "Patient/", "Patient/../etc", "Patient/a/b", "Patinet/1", "Patient/" + "a" * 65,
    "urn:uuid:not-a-uuid", "ftp://x.org/Patient/1", "Patient/1/_history/", "Patient?identifier=123",
])
def test_rejected_reference_forms(reference):
    resource = care_plan()
    resource["subject"]["reference"] = reference

    error = rejected(resource)

    assert issues_of_error(error) == [("CarePlan.subject.reference", "invalid")]


def test_conditional_references_are_allowed_where_the_caller_says_so():
    resource = care_plan()
    resource["subject"]["reference"] = "Patient?identifier=https://partner.example.org/mrn|123"

    assert validate_resource(resource, allow_conditional_refs=True) is resource


def test_references_are_checked_everywhere_in_the_resource():
    resource = care_plan()
    resource["extension"][0]["valueReference"]["reference"] = "episode 1"
    resource["contained"][0]["subject"]["reference"] = "Patient/a b"

    error = rejected(resource)

    assert expressions(error) == {"CarePlan.extension[0].valueReference.reference",
                                  "CarePlan.contained[0].subject.reference"}


@pytest.mark.parametrize("resource_id", ["../etc", "a/b", "a" * 65, "", "white space", "caf\u00e9"])
def test_a_resource_id_outside_the_fhir_id_pattern_is_422(resource_id):
    resource = goal()
    resource["id"] = resource_id

    error = rejected(resource)

    assert expressions(error) == {"Goal.id"}


@pytest.mark.parametrize("resource_id", ["../etc", "a/b", "a" * 65, "", "1\n", "%2e%2e"])
def test_check_id_rejects_an_id_from_the_url_with_400(resource_id):
    with pytest.raises(FhirError) as excinfo:
        check_id(resource_id)

    assert excinfo.value.status == 400


@pytest.mark.parametrize("resource_id", ["1", "a" * 64, "6f1c1f0e-3b1a-4c55-9d3e-2f6f0c9a1b11", "A.b-C"])
def test_check_id_accepts_fhir_ids(resource_id):
    assert check_id(resource_id) is None


# --- contained resources and Bundles ------------------------------------------------------------------------------


def test_a_contained_resource_is_validated_too():
    resource = care_plan()
    resource["contained"].append({"resourceType": "Foo"})
    resource["contained"][0]["lifecycleStatus"] = "done"

    error = rejected(resource)

    assert sorted(issues_of_error(error)) == [
        ("CarePlan.contained[0].lifecycleStatus", "code-invalid"),
        ("CarePlan.contained[1].resourceType", "not-supported"),
    ]


def test_a_contained_resource_of_unknown_type_hides_no_other_problem():
    resource = care_plan()
    resource["contained"].append({"resourceType": "Foo", "bar": 1})
    resource["created"] = "last week"

    error = rejected(resource)

    assert sorted(issues_of_error(error)) == [("CarePlan.contained[1].resourceType", "not-supported"),
                                              ("CarePlan.created", "invalid")]


def test_a_transaction_allows_urn_uuid_and_conditional_references():
    bundle = referral_transaction()

    assert validate_bundle_entries(bundle) is None
    assert validate_resource(bundle, "Bundle") is bundle


def test_entry_problems_point_into_the_bundle():
    bundle = referral_transaction()
    bundle["entry"][1]["resource"]["status"] = "open"
    bundle["entry"][0]["resource"]["birthDate"] = "01/02/1990"
    bundle["entry"][2]["request"]["method"] = "FETCH"

    with pytest.raises(FhirError) as excinfo:
        validate_bundle_entries(bundle)

    assert excinfo.value.status == 422
    assert sorted(issues_of(excinfo)) == [
        ("Bundle.entry[0].resource.birthDate", "invalid"),
        ("Bundle.entry[1].resource.status", "code-invalid"),
        ("Bundle.entry[2].request.method", "code-invalid"),
    ]


def test_a_write_entry_needs_a_resource_and_every_entry_a_request():
    bundle = referral_transaction()
    del bundle["entry"][1]["resource"]
    del bundle["entry"][2]["request"]

    with pytest.raises(FhirError) as excinfo:
        validate_bundle_entries(bundle)

    assert sorted(issues_of(excinfo)) == [("Bundle.entry[1].resource", "required"),
                                          ("Bundle.entry[2].request", "required")]


def test_only_batches_and_transactions_have_entries_to_execute():
    bundle = referral_transaction()
    bundle["type"] = "collection"

    with pytest.raises(FhirError) as excinfo:
        validate_bundle_entries(bundle)

    assert issues_of(excinfo) == [("Bundle.type", "invalid")]


def test_conditional_references_are_not_allowed_in_other_bundles():
    bundle = referral_transaction()
    bundle["type"] = "collection"
    for entry in bundle["entry"]:
        entry.pop("request")
    bundle["entry"].pop()

    error = rejected(bundle, "Bundle")

    assert issues_of_error(error) == [("Bundle.entry[1].resource.requester.reference", "invalid")]


def test_conditional_references_are_for_transactions_only():
    bundle = referral_transaction()
    bundle["type"] = "batch"

    with pytest.raises(FhirError) as excinfo:
        validate_bundle_entries(bundle)

    assert issues_of(excinfo) == [("Bundle.entry[1].resource.requester.reference", "invalid")]
    assert list(bundle_entry_errors(bundle)) == [1]


def test_a_batch_answers_each_entry_on_its_own():
    bundle = referral_transaction()
    bundle["type"] = "batch"
    bundle["entry"][1]["resource"]["requester"]["reference"] = "Organization/partner"
    bundle["entry"][1]["resource"]["intent"] = "wish"

    bundle["entry"].append({"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient"},
                            "fullUrl": "urn:uuid:not a uuid", "response": {"status": "201"}})
    bundle["entry"].append({"request": {"method": "DELETE", "url": "Patient/1", "ifMatch": 1}})

    errors = bundle_entry_errors(bundle)

    assert list(errors) == [1, 3, 4]
    assert [(i.expression, i.code) for i in errors[1].issues] == [("Bundle.entry[1].resource.intent", "code-invalid")]
    assert {i.expression for i in errors[3].issues} == {"Bundle.entry[3].fullUrl", "Bundle.entry[3].response"}
    assert [i.expression for i in errors[4].issues] == ["Bundle.entry[4].request.ifMatch"]
    valid = [entry for index, entry in enumerate(bundle["entry"]) if index not in errors]
    assert validate_bundle_entries(dict(bundle, entry=valid)) is None


# --- values never come back in messages ---------------------------------------------------------------------------


def test_diagnostics_never_repeat_a_submitted_value():
    resource = care_plan()
    resource["period"]["start"] = PHI
    resource["status"] = PHI
    resource["title"] = {"text": PHI}
    resource["subject"]["reference"] = PHI
    resource["note"][0]["time"] = PHI
    resource["activity"][0]["detail"]["dailyAmount"] = {"value": PHI}
    resource["activity"][0]["detail"]["scheduledTiming"]["repeat"]["frequency"] = PHI
    resource["activity"][0]["detail"]["scheduledTiming"]["repeat"]["periodUnit"] = PHI
    resource["contained"][0]["id"] = PHI + "/x"
    resource["contained"].append({"resourceType": PHI})
    resource["meta"]["lastUpdated"] = PHI
    resource["identifier"] = PHI
    resource["extension"][0]["url"] = 42
    resource["text"]["div"] = {"p": PHI}

    error = rejected(resource)

    assert expressions(error) == {
        "CarePlan.period.start", "CarePlan.status", "CarePlan.title", "CarePlan.subject.reference",
        "CarePlan.note[0].time", "CarePlan.activity[0].detail.dailyAmount.value",
        "CarePlan.activity[0].detail.scheduledTiming.repeat.frequency",
        "CarePlan.activity[0].detail.scheduledTiming.repeat.periodUnit", "CarePlan.contained[0].id",
        "CarePlan.contained[1].resourceType", "CarePlan.meta.lastUpdated", "CarePlan.identifier",
        "CarePlan.extension[0].url", "CarePlan.text.div",
    }
    for issue in error.issues:
        assert PHI not in issue.diagnostics
        assert PHI not in (issue.expression or "")


def test_the_endpoint_error_does_not_repeat_the_submitted_type():
    for data, expected in [({"resourceType": PHI}, "Patient"), ({"resourceType": PHI}, None)]:
        error = rejected(data, expected)
        assert all(PHI not in issue.diagnostics for issue in error.issues)


def issues_of_error(error: FhirError) -> list[tuple[str | None, str]]:
    return [(issue.expression, issue.code) for issue in error.issues]
