"""Reading intake's `iop.intake.assessed` Bundle into an Assessment."""
from __future__ import annotations

from dataclasses import replace

import pytest

from services.careplan.assessment import (
    Assessment,
    AssessmentBundleError,
    assessment_from_bundle,
    is_iop_admission,
    parse_days,
    scores_from_bundle,
)
from shared import codes


def _score(obs_id: str, loinc: str, value: int, status: str = "final") -> dict:
    return {"resourceType": "Observation", "id": obs_id, "status": status,
            "code": {"coding": [{"system": codes.LOINC, "code": loinc}]},
            "subject": {"reference": "Patient/pat-1"}, "valueInteger": value}


def _component(code: str, **value) -> dict:
    return {"code": {"coding": [{"system": codes.IOP_FINDING, "code": code}]}, **value}


def _recommendation(level: str = "2.1", disposition: str = "iop") -> dict:
    components = [
        _component("disposition", valueCodeableConcept={"coding": [{"system": codes.IOP_DISPOSITION,
                                                                     "code": disposition}]}),
        _component("reason", valueString="moderate depressive symptoms"),
        _component("reason", valueString="alcohol use above cut-off"),
        _component("family-involvement", valueBoolean=True),
        _component("trauma-positive", valueBoolean=False),
        _component("alcohol-use-positive", valueBoolean=True),
        _component("drug-use-level", valueString="substantial"),
        _component("preferred-days", valueString="Tue, thu,fri, funday"),
        _component("safety-alert", valueBoolean=False),
    ]
    return {"resourceType": "Observation", "id": "rec-1", "status": "final",
            "code": {"coding": [{"system": codes.IOP_OBSERVATION, "code": codes.RECOMMENDATION_CODE}]},
            "valueCodeableConcept": {"coding": [{"system": codes.ASAM_LEVEL, "code": level}]},
            "component": components}


def intake_bundle(*extra_resources: dict, recommendation: dict | None = None, with_patient: bool = True) -> dict:
    resources = [
        {"resourceType": "QuestionnaireResponse", "id": "qr-1", "status": "completed",
         "subject": {"reference": "Patient/pat-1"}},
        *([{"resourceType": "Patient", "id": "pat-1"}] if with_patient else []),
        _score("obs-phq", codes.PHQ9_TOTAL, 14), _score("obs-gad", codes.GAD7_TOTAL, 8),
        _score("obs-audit", codes.AUDITC_TOTAL, 6), _score("obs-dast", codes.DAST10_TOTAL, 7),
        *extra_resources,
    ]
    if recommendation is not None:
        resources.append(recommendation)
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources]}


def test_given_an_intake_bundle_then_the_assessment_carries_level_findings_and_scores():
    assessment = assessment_from_bundle(intake_bundle(recommendation=_recommendation()))

    assert (assessment.patient_id, assessment.questionnaire_response_id) == ("pat-1", "qr-1")
    assert (assessment.level, assessment.disposition) == ("2.1", "iop")
    assert assessment.scores == {codes.PHQ9_TOTAL: 14, codes.GAD7_TOTAL: 8, codes.AUDITC_TOTAL: 6,
                                 codes.DAST10_TOTAL: 7}
    assert assessment.family_involvement and assessment.alcohol_use_positive and not assessment.trauma_positive
    assert assessment.drug_use_level == "substantial"
    assert assessment.preferred_days == ["tue", "thu", "fri"]
    assert assessment.safety_alert is False
    assert assessment.reasons == ["moderate depressive symptoms", "alcohol use above cut-off"]
    assert assessment.recommendation_id == "rec-1"
    assert assessment.observation_ids == ["obs-phq", "obs-gad", "obs-audit", "obs-dast", "rec-1"]


def test_a_bundle_without_the_recommendation_is_refused_with_a_clear_message():
    with pytest.raises(AssessmentBundleError, match="no recommendation Observation"):
        assessment_from_bundle(intake_bundle())


def test_a_bundle_error_is_a_value_error():
    assert issubclass(AssessmentBundleError, ValueError)


@pytest.mark.parametrize("bundle, message", [
    ({"resourceType": "Patient"}, "must carry a FHIR Bundle"),
    ({"resourceType": "Bundle", "entry": []}, "no entries"),
    ({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient", "id": "p"}}]},
     "first entry .* QuestionnaireResponse"),
])
def test_malformed_bundles_are_refused(bundle, message):
    with pytest.raises(AssessmentBundleError, match=message):
        scores_from_bundle(bundle)


def test_withdrawn_scores_and_other_codes_are_ignored():
    withdrawn = _score("obs-old", codes.PHQ9_TOTAL, 27, status="entered-in-error")
    panel = _score("obs-panel", "44249-1", 99)  # the PHQ-9 panel code is never a score
    scores = scores_from_bundle(intake_bundle(withdrawn, panel))
    assert scores.scores[codes.PHQ9_TOTAL] == 14
    assert "44249-1" not in scores.scores
    assert scores.observation_ids[codes.PHQ9_TOTAL] == "obs-phq"


def test_a_reassessment_without_a_patient_entry_takes_the_patient_from_the_response():
    scores = scores_from_bundle(intake_bundle(with_patient=False))
    assert scores.patient_id == "pat-1"
    assert scores.scores[codes.GAD7_TOTAL] == 8


@pytest.mark.parametrize("text, days", [
    ("mon,wed,fri", ["mon", "wed", "fri"]),
    ("Friday, monday", ["mon", "fri"]),
    ("", []),
    ("someday", []),
])
def test_preferred_days_are_read_in_week_order(text, days):
    assert parse_days(text) == days


ADMITTED = Assessment("p", "qr", "2.1", "iop", {})


@pytest.mark.parametrize("changes, admitted", [
    ({}, True),
    ({"disposition": "higher-level"}, False),
    ({"disposition": "lower-level", "level": "1"}, False),
    ({"disposition": "urgent-safety-review"}, False),
    ({"level": "2.5"}, False),
    ({"safety_alert": True}, False),
])
def test_iop_admission_needs_iop_at_level_2_1_and_no_safety_alert(changes, admitted):
    assert is_iop_admission(replace(ADMITTED, **changes)) is admitted


def test_a_safety_alert_in_the_bundle_blocks_admission():
    recommendation = _recommendation()
    for component in recommendation["component"]:
        if component["code"]["coding"][0]["code"] == "safety-alert":
            component["valueBoolean"] = True
    assessment = assessment_from_bundle(intake_bundle(recommendation=recommendation))
    assert assessment.safety_alert and not is_iop_admission(assessment)


@pytest.mark.parametrize("scores, level, depressive, anxious, drugs, substance", [
    ({codes.PHQ9_TOTAL: 10, codes.GAD7_TOTAL: 9}, "low", True, False, False, False),
    ({codes.PHQ9_TOTAL: 9, codes.GAD7_TOTAL: 10}, "moderate", False, True, True, True),
    ({}, None, False, False, False, False),
])
def test_findings_follow_the_screening_cut_offs(scores, level, depressive, anxious, drugs, substance):
    assessment = replace(ADMITTED, scores=scores, drug_use_level=level)
    assert (assessment.depressive_symptoms, assessment.anxiety_symptoms) == (depressive, anxious)
    assert (assessment.drug_use_positive, assessment.substance_use) == (drugs, substance)
