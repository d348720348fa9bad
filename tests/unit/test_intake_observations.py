"""FHIR resources built from a scored intake: shape, contract with careplan, R4 validity, Part 2 labels."""
import pytest
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.observation import Observation

from services.intake.observations import (
    CSSRS_RISK_LEVEL,
    SAFETY_FLAG_TEXT,
    ObservationContext,
    cssrs_observation,
    recommendation_observation,
    safety_flag,
    score_observation,
    score_observations,
)
from services.intake.scoring import score_audit_c, score_cssrs, score_intake, score_phq9
from services.intake.triage import Findings, Recommendation, findings_from_intake, recommend_level_of_care
from shared import codes

LOINC = "http://loinc.org"
YES, NO = {"system": LOINC, "code": "LA33-6"}, {"system": LOINC, "code": "LA32-8"}
CTX = ObservationContext("Patient/p1", "QuestionnaireResponse/qr1", "2025-03-01T10:00:00Z")
PANEL_CODES = {"44249-1", "69737-5", "72109-2", "82666-9", "93373-9"}


def loinc(code):
    return {"system": LOINC, "code": code}


def full_intake_answers(**overrides):
    """Given an intake with every screen answered (PHQ-9 12, GAD-7 7, AUDIT-C 4, DAST-10 1, PC-PTSD-5 3)."""
    answers = {
        **{f"phq9-q{n}": [loinc("LA6570-1" if n <= 6 else "LA6568-5")] for n in range(1, 10)},
        **{f"gad7-q{n}": [loinc("LA6569-3")] for n in range(1, 8)},
        "auditc-q1": [loinc("LA18929-2")], "auditc-q2": [loinc("LA15694-5")], "auditc-q3": [loinc("LA6270-8")],
        **{f"dast10-q{n}": [NO] for n in range(1, 11)},
        "trauma-exposure": [True], **{f"ptsd5-q{n}": [YES if n <= 3 else NO] for n in range(1, 6)},
        "cssrs-q1": [NO], "cssrs-q2": [NO], "cssrs-q6": [NO],
        "administrative-sex": [{"system": "http://hl7.org/fhir/administrative-gender", "code": "male"}],
        "family-involvement": [False], "available-days": [{"code": "mon"}, {"code": "thu"}],
        "safe-housing": [True],
    }
    return answers | overrides


def component(observation, code):
    return [c for c in observation["component"] if c["code"]["coding"][0]["code"] == code]


def component_value(observation, code):
    (found,) = component(observation, code)
    return next(value for key, value in found.items() if key.startswith("value"))


def test_every_score_observation_is_a_labelled_us_core_shaped_survey_result():
    built = score_observations(score_intake(full_intake_answers()), CTX)
    assert [(o["code"]["coding"][0]["code"], o["valueInteger"]) for o in built[:-1]] == [
        (codes.PHQ9_TOTAL, 12), (codes.GAD7_TOTAL, 7), (codes.AUDITC_TOTAL, 4), (codes.DAST10_TOTAL, 1),
        ("pc-ptsd-5-total", 3)]
    assert built[-1]["code"]["coding"][0]["code"] == codes.CSSRS_RISK
    for observation in built:
        Observation.model_validate(observation)
        assert observation["status"] == "final"
        assert observation["category"][0]["coding"][0] == {
            "system": codes.OBSERVATION_CATEGORY, "code": "survey", "display": "Survey"}
        assert observation["code"]["coding"][0]["code"] not in PANEL_CODES
        assert observation["subject"] == {"reference": "Patient/p1"}
        assert observation["derivedFrom"] == [{"reference": "QuestionnaireResponse/qr1"}]
        assert observation["effectiveDateTime"] == "2025-03-01T10:00:00Z"
        assert observation["meta"]["security"] == codes.PART2_LABELS


def test_phq9_observation_carries_its_band():
    observation = score_observation(score_phq9(full_intake_answers()), CTX)
    assert observation["code"]["coding"][0]["system"] == LOINC
    assert (observation["valueInteger"], observation["interpretation"][0]["text"]) == (12, "Moderate")
    assert "note" not in observation


def test_audit_c_observation_is_positive_and_notes_points_only_from_q1():
    observation = score_observation(score_audit_c(full_intake_answers(), "male"), CTX)
    interpretation = {c["code"] for c in observation["interpretation"][0]["coding"]}
    assert interpretation == {"positive", "POS"}
    assert any("question 1" in note["text"] for note in observation["note"])


def test_incomplete_screen_is_preliminary_and_says_so():
    answers = {f"phq9-q{n}": [loinc("LA6571-9")] for n in (1, 2)}
    observation = score_observation(score_phq9(answers), CTX)
    assert (observation["status"], observation["valueInteger"]) == ("preliminary", 6)
    assert observation["note"][0]["text"].startswith("Incomplete: 7 item(s) not answered")
    Observation.model_validate(observation)


@pytest.mark.parametrize("answers, risk, loinc_answer", [
    ({"cssrs-q1": [YES], "cssrs-q2": [NO], "cssrs-q6": [NO]}, "low", "LA9194-7"),
    ({"cssrs-q1": [YES], "cssrs-q2": [YES], "cssrs-q3": [YES], "cssrs-q4": [YES], "cssrs-q5": [NO],
      "cssrs-q6": [NO]}, "high", None),
])
def test_cssrs_risk_observation(answers, risk, loinc_answer):
    observation = cssrs_observation(score_cssrs(answers), CTX)
    Observation.model_validate(observation)
    codings = observation["valueCodeableConcept"]["coding"]
    assert observation["code"]["coding"][0] == {"system": LOINC, "code": "93374-7", "display": "Suicide risk level"}
    assert codings[0] == {"system": CSSRS_RISK_LEVEL, "code": risk, "display": risk.capitalize()}
    assert [c["code"] for c in codings[1:]] == ([loinc_answer] if loinc_answer else [])


def test_nothing_administered_builds_no_score_observation():
    assert score_observations(score_intake({}), CTX) == []


def test_recommendation_observation_contract():
    answers = full_intake_answers()
    findings = findings_from_intake(answers, score_intake(answers))
    recommendation = recommend_level_of_care(findings)
    refs = ["urn:uuid:6b0d3c52-1d0c-4a0f-9a55-2b1b8d8c0001", "Observation/phq9"]

    observation = recommendation_observation(recommendation, findings, CTX, refs)

    Observation.model_validate(observation)
    assert observation["code"]["coding"] == [{"system": codes.IOP_OBSERVATION, "code": codes.RECOMMENDATION_CODE,
                                              "display": "ASAM recommended level of care"}]
    assert observation["valueCodeableConcept"]["coding"][0]["system"] == codes.ASAM_LEVEL
    assert observation["valueCodeableConcept"]["coding"][0]["code"] == "2.1"
    assert observation["derivedFrom"] == [{"reference": r} for r in ("QuestionnaireResponse/qr1", *refs)]
    assert observation["meta"]["security"] == codes.PART2_LABELS
    assert {c["code"]["coding"][0]["system"] for c in observation["component"]} == {codes.IOP_FINDING}
    assert component_value(observation, "disposition")["coding"][0] == {
        "system": codes.IOP_DISPOSITION, "code": "iop", "display": "Admit to the Intensive Outpatient Program"}
    assert [c["valueString"] for c in component(observation, "reason")] == list(recommendation.reasons)
    assert [component_value(observation, code) for code in (
        "asam-edition", "family-involvement", "trauma-positive", "alcohol-use-positive", "drug-use-level",
        "preferred-days", "safety-alert")] == ["3", False, True, True, "low", "mon,thu", False]


def test_unknown_findings_are_marked_absent_not_guessed():
    recommendation = Recommendation("iop", "2.1", ("PHQ-9 not administered",))
    observation = recommendation_observation(recommendation, Findings(), CTX)
    Observation.model_validate(observation)
    for code in ("family-involvement", "trauma-positive", "alcohol-use-positive", "drug-use-level", "preferred-days"):
        (found,) = component(observation, code)
        assert found["dataAbsentReason"]["coding"][0]["code"] == "unknown"
        assert not any(key.startswith("value") for key in found)
    assert observation["derivedFrom"] == [{"reference": "QuestionnaireResponse/qr1"}]


def test_urgent_safety_review_sets_the_alert_and_builds_a_flag():
    answers = full_intake_answers(**{"phq9-q9": [loinc("LA6569-3")]})
    findings = findings_from_intake(answers, score_intake(answers))
    recommendation = recommend_level_of_care(findings)
    observation = recommendation_observation(recommendation, findings, CTX)
    flag = safety_flag(CTX, detail_ref="urn:uuid:6b0d3c52-1d0c-4a0f-9a55-2b1b8d8c0002")

    assert component_value(observation, "disposition")["coding"][0]["code"] == "urgent-safety-review"
    assert component_value(observation, "safety-alert") is True
    Flag.model_validate(flag)
    assert (flag["status"], flag["code"], flag["subject"], flag["period"]) == (
        "active", {"text": SAFETY_FLAG_TEXT}, {"reference": "Patient/p1"}, {"start": "2025-03-01T10:00:00Z"})
    assert flag["category"][0]["coding"][0]["code"] == "safety"
    assert flag["extension"][0]["valueReference"] == {"reference": "urn:uuid:6b0d3c52-1d0c-4a0f-9a55-2b1b8d8c0002"}
    assert flag["meta"]["security"] == codes.PART2_LABELS


def test_flag_without_detail_has_no_extension():
    flag = safety_flag(CTX)
    Flag.model_validate(flag)
    assert "extension" not in flag


def test_labels_are_copies_not_the_shared_list():
    observation = score_observation(score_phq9(full_intake_answers()), CTX)
    observation["meta"]["security"][0]["code"] = "N"
    assert codes.PART2_LABELS[0]["code"] == "R"
