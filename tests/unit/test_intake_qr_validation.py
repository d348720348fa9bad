"""Validation of QuestionnaireResponses against the intake catalogue, and the catalogue itself."""
import copy

import pytest
from fhir.resources.R4B.questionnaire import Questionnaire
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse

from services.intake.qr_validation import validate_response
from services.intake.questionnaires import (
    GAD7_URL,
    IOP_INTAKE_URL,
    PHQ9_URL,
    SUBSTANCE_USE_CHECKIN_URL,
    find_questionnaire,
    is_enabled,
    items_by_link_id,
    iter_items,
    load_catalogue,
)
from services.intake.samples import LOINC, NO, YES, build_items, default_answer

ONE_OR_TWO = {"system": LOINC, "code": "LA15694-5"}
DRINKS_MONTHLY = {"auditc-q1": [{"system": LOINC, "code": "LA18926-8", "display": "Monthly or less"}]}
CATALOGUE = load_catalogue()
INTAKE = CATALOGUE[IOP_INTAKE_URL]


def fill(questionnaire, status="completed", **overrides):
    """A response answering every enabled question; overrides (linkId with _ for -) replace or drop answers."""
    answers = {item["linkId"]: [default_answer(item)] for item in iter_items(questionnaire["item"])
               if item["type"] not in ("group", "display")}
    answers |= DRINKS_MONTHLY | {key.replace("_", "-"): value for key, value in overrides.items()}
    answers = {key: value for key, value in answers.items() if value is not None}
    return {"resourceType": "QuestionnaireResponse", "status": status,
            "questionnaire": f"{questionnaire['url']}|{questionnaire['version']}",
            "subject": {"reference": "Patient/1"}, "item": build_items(questionnaire["item"], answers)}


def locate(qr, link_id, path="QuestionnaireResponse", items=None):
    """The response item with link_id, and its expression path."""
    for index, item in enumerate(qr["item"] if items is None else items):
        here = f"{path}.item[{index}]"
        if item["linkId"] == link_id:
            return item, here
        found = locate(qr, link_id, here, item.get("item", []))
        if found:
            return found
    return None


def codes_and_paths(issues):
    return [(issue.code, issue.expression) for issue in issues]


# The catalogue.
def test_catalogue_holds_the_four_questionnaires_and_parses_as_r4():
    assert set(CATALOGUE) == {IOP_INTAKE_URL, PHQ9_URL, GAD7_URL, SUBSTANCE_USE_CHECKIN_URL}
    for url, questionnaire in CATALOGUE.items():
        Questionnaire.model_validate(questionnaire)
        assert (questionnaire["status"], questionnaire["version"], url.endswith("/" + questionnaire["id"])) == (
            "active", "1.0.0", True)


def test_find_questionnaire_by_canonical():
    assert find_questionnaire(CATALOGUE, IOP_INTAKE_URL) is INTAKE
    assert find_questionnaire(CATALOGUE, f"{IOP_INTAKE_URL}|1.0.0") is INTAKE
    assert find_questionnaire(CATALOGUE, f"{IOP_INTAKE_URL}|9.9.9") is None
    assert find_questionnaire(CATALOGUE, "https://example.org/Questionnaire/other") is None


@pytest.mark.parametrize("url", sorted(CATALOGUE))
def test_link_ids_are_unique_and_every_item_is_typed(url):
    items = list(iter_items(CATALOGUE[url]["item"]))
    assert len({item["linkId"] for item in items}) == len(items)
    assert all(item.get("type") for item in items)


def test_intake_items_carry_loinc_codes_and_ordinal_scores():
    items = items_by_link_id(INTAKE)
    assert [items[f"phq9-q{n}"]["code"][0]["code"] for n in (1, 9)] == ["44250-9", "44260-8"]
    assert [items[f"cssrs-q{n}"]["code"][0]["code"] for n in (1, 2, 3, 4, 5, 6)] == [
        "93246-7", "93247-5", "93248-3", "93249-1", "93250-9", "93267-3"]
    assert items["dast-10"]["code"][0]["code"] == "82666-9" and "code" not in items["dast10-q1"]
    assert all("extension" in option for option in items["auditc-q2"]["answerOption"])
    assert items["substances"]["repeats"] and items["available-days"]["repeats"]
    assert items["consent-provider"]["type"] == "group" and items["consent-provider"]["repeats"]


def test_cssrs_follow_up_questions_depend_on_q2_and_q6():
    items = items_by_link_id(INTAKE)
    for n in (3, 4, 5):
        assert items[f"cssrs-q{n}"]["enableWhen"] == [
            {"question": "cssrs-q2", "operator": "=", "answerCoding": YES}]
    assert items["cssrs-q6-recent"]["enableWhen"][0]["question"] == "cssrs-q6"


# Whole responses.
@pytest.mark.parametrize("url", sorted(CATALOGUE))
def test_complete_response_is_valid_and_parses_as_r4(url):
    qr = fill(CATALOGUE[url])
    assert validate_response(qr, CATALOGUE[url]) == []
    QuestionnaireResponse.model_validate(qr)


def test_complete_intake_with_every_branch_open_is_valid():
    qr = fill(INTAKE, cssrs_q2=[YES], cssrs_q6=[YES], withdrawal_history=[True], trauma_exposure=[True],
              consent_to_share=[True], substances=[{"system": "https://iop-suite.org/fhir/CodeSystem/intake-answer",
                                                    "code": "alcohol", "display": "Alcohol"},
                                                   {"system": "https://iop-suite.org/fhir/CodeSystem/intake-answer",
                                                    "code": "opioids", "display": "Opioids"}])
    assert locate(qr, "cssrs-q5") and locate(qr, "withdrawal-dts") and locate(qr, "consent-provider-name")
    assert validate_response(qr, INTAKE) == []


def test_expression_points_at_the_answer():
    qr = fill(INTAKE)
    item, path = locate(qr, "auditc-q1")
    item["answer"][0] = {"valueCoding": {"system": LOINC, "code": "LA6568-5"}}
    issues = validate_response(qr, INTAKE)
    assert codes_and_paths(issues) == [("value", "QuestionnaireResponse.item[3].item[0].answer[0]")]
    assert path == "QuestionnaireResponse.item[3].item[0]"
    assert issues[0].diagnostics == "Answer to 'auditc-q1' is not one of its answerOption values"


# Header.
@pytest.mark.parametrize("change, expected", [
    ({"questionnaire": PHQ9_URL}, ("invalid", "QuestionnaireResponse.questionnaire")),
    ({"questionnaire": f"{IOP_INTAKE_URL}|0.9"}, ("invalid", "QuestionnaireResponse.questionnaire")),
    ({"questionnaire": None}, ("required", "QuestionnaireResponse.questionnaire")),
    ({"status": "done"}, ("invalid", "QuestionnaireResponse.status")),
    ({"resourceType": "Observation"}, ("invalid", "QuestionnaireResponse")),
])
def test_header_problems(change, expected):
    qr = {**fill(INTAKE), **change}
    assert codes_and_paths(validate_response(qr, INTAKE)) == [expected]


def test_unversioned_canonical_is_accepted():
    assert validate_response({**fill(INTAKE), "questionnaire": IOP_INTAKE_URL}, INTAKE) == []


# Unknown items.
def test_unknown_link_ids_at_top_and_nested_levels():
    qr = fill(INTAKE)
    qr["item"].append({"linkId": "favourite-colour", "answer": [{"valueString": "blue"}]})
    locate(qr, "audit-c")[0]["item"].append({"linkId": "phq9-q1", "answer": [{"valueCoding": NO}]})
    issues = validate_response(qr, INTAKE)
    assert codes_and_paths(issues) == [("structure", "QuestionnaireResponse.item[3].item[3]"),
                                       ("structure", f"QuestionnaireResponse.item[{len(qr['item']) - 1}]")]
    assert "phq9-q1" in issues[0].diagnostics and "blue" not in issues[1].diagnostics


# Required answers.
def test_missing_required_answers_when_completed():
    qr = fill(INTAKE, phq9_q9=None, safe_housing=None)
    issues = validate_response(qr, INTAKE)
    _, phq9_path = locate(qr, "phq-9")
    _, environment_path = locate(qr, "recovery-environment")
    assert codes_and_paths(issues) == [("required", phq9_path), ("required", environment_path)]
    assert issues[0].diagnostics == "Required item 'phq9-q9' is missing"


def test_missing_required_group_is_reported_at_the_response():
    qr = fill(INTAKE)
    qr["item"] = [item for item in qr["item"] if item["linkId"] != "gad-7"]
    assert codes_and_paths(validate_response(qr, INTAKE)) == [("required", "QuestionnaireResponse")]


def test_in_progress_response_is_checked_for_structure_only():
    qr = fill(INTAKE, status="in-progress", phq9_q9=None, safe_housing=None)
    assert validate_response(qr, INTAKE) == []
    locate(qr, "phq9-q1")[0]["answer"].append({"valueCoding": {"system": LOINC, "code": "LA6571-9"}})
    assert [issue.code for issue in validate_response(qr, INTAKE)] == ["structure"]


def test_present_item_without_answer_is_missing_a_required_answer():
    qr = fill(INTAKE)
    item, path = locate(qr, "treatment-goals")
    del item["answer"]
    assert codes_and_paths(validate_response(qr, INTAKE)) == [("required", path)]


def test_required_items_of_optional_absent_groups_are_not_required():
    qr = fill(INTAKE)
    qr["item"] = [item for item in qr["item"] if item["linkId"] not in ("medications", "co-occurring")]
    assert validate_response(qr, INTAKE) == []


def test_each_instance_of_a_repeating_group_is_checked():
    qr = fill(INTAKE, consent_to_share=[True])
    consent, _ = locate(qr, "consent")
    consent["item"].append({"linkId": "consent-provider", "item": [
        {"linkId": "consent-provider-identifier", "answer": [{"valueString": "1234567890"}]}]})
    issues = validate_response(qr, INTAKE)
    _, consent_path = locate(qr, "consent")
    assert codes_and_paths(issues) == [("required", f"{consent_path}.item[2]")]
    assert "consent-provider-name" in issues[0].diagnostics


# enableWhen hides items.
def test_answers_to_hidden_items_are_refused():
    qr = fill(INTAKE)  # C-SSRS Q2 is No, so Q3 to Q5 are hidden
    c_ssrs, path = locate(qr, "c-ssrs")
    c_ssrs["item"].insert(2, {"linkId": "cssrs-q3", "answer": [{"valueCoding": YES}]})
    issues = validate_response(qr, INTAKE)
    assert codes_and_paths(issues) == [("structure", f"{path}.item[2]")]
    assert issues[0].diagnostics == "Item 'cssrs-q3' is answered but its enableWhen conditions hide it"


def test_enabled_follow_up_questions_become_required():
    qr = fill(INTAKE, cssrs_q2=[YES], cssrs_q3=None, withdrawal_history=[True], withdrawal_dts=None)
    issues = validate_response(qr, INTAKE)
    assert [issue.diagnostics for issue in issues] == ["Required item 'withdrawal-dts' is missing",
                                                       "Required item 'cssrs-q3' is missing"]


def test_patient_who_never_drinks_skips_audit_c_q2_and_q3():
    never = [{"system": LOINC, "code": "LA6270-8", "display": "Never"}]
    qr = fill(INTAKE, auditc_q1=never)
    assert [item["linkId"] for item in locate(qr, "audit-c")[0]["item"]] == ["auditc-q1"]
    assert validate_response(qr, INTAKE) == []
    locate(qr, "audit-c")[0]["item"].append({"linkId": "auditc-q2", "answer": [{"valueCoding": ONE_OR_TWO}]})
    assert [issue.code for issue in validate_response(qr, INTAKE)] == ["structure"]


def test_hidden_required_group_is_not_required():
    qr = fill(INTAKE, consent_to_share=[False])
    assert locate(qr, "consent-provider") is None
    assert validate_response(qr, INTAKE) == []


# Answer types.
OPTION_A = {"system": "s", "code": "a"}
TYPES_FORM = {
    "resourceType": "Questionnaire", "url": "https://example.org/Questionnaire/types", "version": "1",
    "status": "active",
    "item": [{"linkId": t, "type": t} for t in ("boolean", "decimal", "integer", "date", "dateTime", "time", "string",
                                                 "text", "quantity")]
    + [{"linkId": "open-choice", "type": "open-choice", "answerOption": [{"valueCoding": OPTION_A}]},
       {"linkId": "choice", "type": "choice", "answerOption": [{"valueCoding": OPTION_A}]},
       {"linkId": "choice-int", "type": "choice", "answerOption": [{"valueInteger": 1}, {"valueInteger": 2}]},
       {"linkId": "group", "type": "group", "item": [{"linkId": "inner", "type": "string"}]},
       {"linkId": "parent", "type": "boolean", "item": [{"linkId": "child", "type": "string", "required": True}]},
       {"linkId": "ranged", "type": "integer", "extension": [
           {"url": "http://hl7.org/fhir/StructureDefinition/minValue", "valueInteger": 0},
           {"url": "http://hl7.org/fhir/StructureDefinition/maxValue", "valueInteger": 10}]}],
}


def response(*items, status="in-progress"):
    return {"resourceType": "QuestionnaireResponse", "status": status, "questionnaire": TYPES_FORM["url"],
            "item": list(items)}


def answered(link_id, **value):
    return {"linkId": link_id, "answer": [value]}


@pytest.mark.parametrize("link_id, value", [
    ("boolean", {"valueBoolean": False}), ("decimal", {"valueDecimal": 2.5}), ("decimal", {"valueDecimal": 3}),
    ("integer", {"valueInteger": 0}), ("date", {"valueDate": "2024-02-29"}), ("date", {"valueDate": "2024-02"}),
    ("dateTime", {"valueDateTime": "2024-02-29T10:00:00+01:00"}), ("dateTime", {"valueDateTime": "2024"}),
    ("time", {"valueTime": "09:30:00"}), ("string", {"valueString": "x"}), ("text", {"valueString": "x\ny"}),
    ("quantity", {"valueQuantity": {"value": 2, "unit": "mg"}}),
    ("open-choice", {"valueString": "free text"}), ("open-choice", {"valueCoding": {"system": "s", "code": "a"}}),
    ("choice", {"valueCoding": {"system": "s", "code": "a", "display": "A"}}), ("choice-int", {"valueInteger": 2}),
    ("ranged", {"valueInteger": 10}),
])
def test_answers_of_the_right_type_pass(link_id, value):
    assert validate_response(response(answered(link_id, **value)), TYPES_FORM) == []


@pytest.mark.parametrize("link_id, value, diagnostics", [
    ("boolean", {"valueString": "Jane Doe"}, "must be valueBoolean (item type boolean)"),
    ("boolean", {"valueBoolean": "Jane Doe"}, "is not a valid valueBoolean"),
    ("integer", {"valueDecimal": 1.5}, "must be valueInteger (item type integer)"),
    ("integer", {"valueInteger": True}, "is not a valid valueInteger"),
    ("decimal", {"valueDecimal": "1.5"}, "is not a valid valueDecimal"),
    ("date", {"valueDate": "2023-02-29"}, "is not a valid valueDate"),
    ("date", {"valueDateTime": "2024-02-01T10:00:00Z"}, "must be valueDate (item type date)"),
    ("dateTime", {"valueDateTime": "2024-02-01T10:00"}, "is not a valid valueDateTime"),
    ("time", {"valueTime": "9:30"}, "is not a valid valueTime"),
    ("string", {"valueString": "  "}, "is not a valid valueString"),
    ("text", {"valueCoding": {"code": "x"}}, "must be valueString (item type text)"),
    ("quantity", {"valueQuantity": {"unit": "mg"}}, "is not a valid valueQuantity"),
    ("choice", {"valueString": "Jane Doe"}, "must be valueCoding (item type choice)"),
    ("choice", {"valueCoding": {"system": "s", "code": "secret-b"}}, "is not one of its answerOption values"),
    ("choice", {"valueCoding": {"system": "other", "code": "a"}}, "is not one of its answerOption values"),
    ("choice", {"valueCoding": {"system": "s"}}, "is not a valid valueCoding"),
    ("open-choice", {"valueCoding": {"system": "s", "code": "secret-b"}}, "is not one of its answerOption values"),
    ("choice-int", {"valueInteger": 3}, "is not one of its answerOption values"),
    ("ranged", {"valueInteger": 11}, "is outside the allowed range 0..10"),
    ("ranged", {"valueInteger": -1}, "is outside the allowed range 0..10"),
])
def test_answers_of_the_wrong_type_or_value_are_refused_without_echoing_them(link_id, value, diagnostics):
    issues = validate_response(response(answered(link_id, **value)), TYPES_FORM)
    assert codes_and_paths(issues) == [("value", "QuestionnaireResponse.item[0].answer[0]")]
    assert issues[0].diagnostics == f"Answer to '{link_id}' {diagnostics}"
    assert not any(secret in issues[0].diagnostics for secret in ("Jane", "secret", "1.5", "2023", "9:30"))


def test_two_values_in_one_answer_are_refused():
    qr = response({"linkId": "boolean", "answer": [{"valueBoolean": True, "valueString": "x"}]})
    assert codes_and_paths(validate_response(qr, TYPES_FORM)) == [("value", "QuestionnaireResponse.item[0].answer[0]")]


def test_several_answers_to_a_non_repeating_item():
    qr = response({"linkId": "string", "answer": [{"valueString": "a"}, {"valueString": "b"}]})
    issues = validate_response(qr, TYPES_FORM)
    assert codes_and_paths(issues) == [("structure", "QuestionnaireResponse.item[0].answer[1]")]
    assert issues[0].diagnostics == "Item 'string' does not repeat but has 2 answers"


def test_repeated_non_repeating_item_and_answers_on_a_group():
    qr = response(answered("string", valueString="a"), answered("string", valueString="b"),
                  {"linkId": "group", "answer": [{"valueString": "a"}]})
    assert codes_and_paths(validate_response(qr, TYPES_FORM)) == [
        ("structure", "QuestionnaireResponse.item[1]"), ("structure", "QuestionnaireResponse.item[2].answer[0]")]


def test_children_of_a_question_live_under_its_answer():
    nested = {"linkId": "parent", "answer": [{"valueBoolean": True, "item": [answered("child", valueString="x")]}]}
    assert validate_response(response(nested), TYPES_FORM) == []
    wrong_child = {"linkId": "parent", "answer": [{"valueBoolean": True, "item": [answered("child", valueInteger=1)]}]}
    assert codes_and_paths(validate_response(response(wrong_child), TYPES_FORM)) == [
        ("value", "QuestionnaireResponse.item[0].answer[0].item[0].answer[0]")]
    misplaced = {"linkId": "parent", "answer": [{"valueBoolean": True}], "item": [answered("child", valueString="x")]}
    assert codes_and_paths(validate_response(response(misplaced, status="completed"), TYPES_FORM)) == [
        ("structure", "QuestionnaireResponse.item[0].item[0]"),
        ("required", "QuestionnaireResponse.item[0].answer[0]")]


def test_answer_without_value_or_items():
    qr = response({"linkId": "string", "answer": [{}]})
    assert codes_and_paths(validate_response(qr, TYPES_FORM)) == [("value", "QuestionnaireResponse.item[0].answer[0]")]


# enableWhen operators (FHIR questionnaire-enable-operator).
def gated(*conditions, behavior=None):
    item = {"linkId": "gated", "type": "string", "enableWhen": list(conditions)}
    return item | ({"enableBehavior": behavior} if behavior else {})


def when(operator, **answer):
    return {"question": "q", "operator": operator, **answer}


@pytest.mark.parametrize("condition, answers, enabled", [
    (when("exists", answerBoolean=True), [3], True),
    (when("exists", answerBoolean=True), [], False),
    (when("exists", answerBoolean=False), [], True),
    (when("=", answerInteger=3), [1, 3], True),
    (when("=", answerInteger=3), [4], False),
    (when("=", answerInteger=1), [True], False),
    (when("=", answerBoolean=True), [True], True),
    (when("=", answerCoding=YES), [{"system": LOINC, "code": "LA33-6"}], True),
    (when("=", answerCoding=YES), [{"system": "other", "code": "LA33-6"}], False),
    (when("=", answerCoding=YES), [NO], False),
    (when("!=", answerInteger=3), [4], True),
    (when("!=", answerInteger=3), [3], False),
    (when("!=", answerInteger=3), [], True),
    (when(">", answerInteger=3), [4], True),
    (when(">", answerInteger=3), [3], False),
    (when("<", answerDecimal=2.5), [2], True),
    (when("<", answerDecimal=2.5), [], False),
    (when(">=", answerInteger=3), [3], True),
    (when(">=", answerInteger=3), [2], False),
    (when("<=", answerDate="2024-01-31"), ["2024-01-31"], True),
    (when("<=", answerDate="2024-01-31"), ["2024-02-01"], False),
    (when(">", answerQuantity={"value": 5, "unit": "mg"}), [{"value": 6, "unit": "mg"}], True),
    (when(">", answerInteger=3), ["4"], False),
])
def test_enable_when_operators(condition, answers, enabled):
    assert is_enabled(gated(condition), {"q": answers}) is enabled


@pytest.mark.parametrize("behavior, answers, enabled", [
    ("all", {"q": [1], "r": [True]}, True), ("all", {"q": [1], "r": [False]}, False),
    ("any", {"q": [2], "r": [True]}, True), ("any", {"q": [2], "r": [False]}, False),
    (None, {"q": [1], "r": [False]}, False),
])
def test_enable_behavior_all_and_any(behavior, answers, enabled):
    item = gated(when("=", answerInteger=1), {"question": "r", "operator": "=", "answerBoolean": True},
                 behavior=behavior)
    assert is_enabled(item, answers) is enabled


def test_validation_does_not_alter_its_inputs():
    qr, questionnaire = fill(INTAKE), copy.deepcopy(INTAKE)
    before = copy.deepcopy(qr)
    validate_response(qr, questionnaire)
    assert (qr, questionnaire) == (before, INTAKE)
