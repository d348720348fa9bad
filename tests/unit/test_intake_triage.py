"""The level-of-care decision table (docs/triage.md): one test per row, then precedence."""
import itertools
from dataclasses import replace
from pathlib import Path

import pytest

from services.intake.scoring import score_intake
from services.intake.triage import (
    HIGHER_LEVEL_RULES,
    MILD_EVERYWHERE,
    SAFETY_RULES,
    Findings,
    Recommendation,
    findings_from_intake,
    recommend_level_of_care,
)

LOINC = "http://loinc.org"
YES, NO = {"system": LOINC, "code": "LA33-6"}, {"system": LOINC, "code": "LA32-8"}
TRIAGE_DOC = Path(__file__).resolve().parents[2] / "docs" / "triage.md"

# Given a patient whose every screen is mild and who meets no higher-level criterion.
MILD = Findings(phq9_total=9, phq9_item9=0, gad7_total=9, audit_c_positive=False, dast10_total=2,
                dast10_band="low", trauma_positive=False, cssrs_risk="none")
HIGHER_FLAGS = ("withdrawal_seizures_or_dts", "needs_24h_medical_monitoring", "psychosis_or_mania",
                "unable_to_take_part_safely", "unsafe_environment", "repeated_iop_without_progress")


# Safety rows: urgent-safety-review, safety alert, never IOP.
@pytest.mark.parametrize("change, level, reason", [
    ({"phq9_item9": 1}, "2.5", "PHQ-9 item 9 above 0 (thoughts of death or self-harm)"),
    ({"phq9_item9": 3, "phq9_total": 3}, "2.5", "PHQ-9 item 9 above 0 (thoughts of death or self-harm)"),
    ({"cssrs_risk": "moderate"}, "2.5", "C-SSRS screener: moderate suicide risk"),
    ({"cssrs_risk": "high"}, "4", "C-SSRS screener: high suicide risk"),
])
def test_safety_rows_need_same_day_review(change, level, reason):
    recommendation = recommend_level_of_care(replace(MILD, **change))
    assert recommendation == Recommendation("urgent-safety-review", level, (reason,), safety_alert=True)


# Higher-level rows (DOMAIN.md 2.3, points 2 to 5).
@pytest.mark.parametrize("flag, level, reason", [
    ("withdrawal_seizures_or_dts", "3.7", "History of withdrawal seizures or delirium tremens: withdrawal management"),
    ("needs_24h_medical_monitoring", "4", "Needs 24-hour medical or nursing monitoring"),
    ("psychosis_or_mania", "2.5", "Psychosis or mania"),
    ("unable_to_take_part_safely", "2.5", "Unable to take part in outpatient treatment safely"),
    ("unsafe_environment", "3.5", "Recovery environment unsafe"),
    ("repeated_iop_without_progress", "3.5", "Two or more earlier IOP episodes without lasting progress"),
])
def test_higher_level_rows(flag, level, reason):
    recommendation = recommend_level_of_care(replace(MILD, **{flag: True}))
    assert recommendation == Recommendation("higher-level", level, (reason,), safety_alert=False)


def test_mild_everywhere_row_is_outpatient():
    assert recommend_level_of_care(MILD) == Recommendation("lower-level", "1", (MILD_EVERYWHERE,))


@pytest.mark.parametrize("change, reason", [
    ({"phq9_total": 10}, "PHQ-9 total 10 or more"),
    ({"gad7_total": 10}, "GAD-7 total 10 or more"),
    ({"audit_c_positive": True}, "AUDIT-C positive"),
    ({"dast10_total": 3}, "DAST-10 total 3 or more"),
    ({"trauma_positive": True}, "PC-PTSD-5 positive"),
    ({"cssrs_risk": "low"}, "C-SSRS screener: low suicide risk"),
    ({"gad7_total": None}, "GAD-7 not administered"),
    ({"cssrs_risk": None}, "C-SSRS not administered"),
])
def test_otherwise_iop_row_says_why_outpatient_is_not_enough(change, reason):
    recommendation = recommend_level_of_care(replace(MILD, **change))
    assert recommendation == Recommendation("iop", "2.1", (reason,), safety_alert=False)


def test_iop_lists_every_screen_above_outpatient():
    findings = replace(MILD, phq9_total=16, dast10_total=7, audit_c_positive=True)
    assert recommend_level_of_care(findings).reasons == (
        "PHQ-9 total 10 or more", "AUDIT-C positive", "DAST-10 total 3 or more")


def test_nothing_administered_is_iop_not_outpatient():
    recommendation = recommend_level_of_care(Findings())
    assert (recommendation.disposition, len(recommendation.reasons)) == ("iop", 6)


# Precedence.
def test_several_higher_rows_give_the_most_intensive_level_and_every_reason():
    findings = replace(MILD, psychosis_or_mania=True, withdrawal_seizures_or_dts=True, unsafe_environment=True)
    recommendation = recommend_level_of_care(findings)
    assert (recommendation.disposition, recommendation.asam_level) == ("higher-level", "3.7")
    assert len(recommendation.reasons) == 3


def test_safety_comes_before_higher_level_and_keeps_its_reasons():
    findings = replace(MILD, phq9_item9=1, needs_24h_medical_monitoring=True)
    recommendation = recommend_level_of_care(findings)
    assert (recommendation.disposition, recommendation.asam_level, recommendation.safety_alert) == (
        "urgent-safety-review", "4", True)
    assert recommendation.reasons == ("PHQ-9 item 9 above 0 (thoughts of death or self-harm)",
                                      "Needs 24-hour medical or nursing monitoring")


@pytest.mark.parametrize("safety", [{"phq9_item9": 1}, {"cssrs_risk": "moderate"}, {"cssrs_risk": "high"}])
@pytest.mark.parametrize("flags", list(itertools.product([False, True], repeat=len(HIGHER_FLAGS))))
def test_safety_finding_is_never_iop_whatever_else(safety, flags):
    for base in (MILD, replace(MILD, phq9_total=20, gad7_total=15), Findings()):
        findings = replace(base, **safety, **dict(zip(HIGHER_FLAGS, flags, strict=True)))
        recommendation = recommend_level_of_care(findings)
        assert recommendation.disposition == "urgent-safety-review"
        assert recommendation.safety_alert is True


def test_phq9_item9_zero_and_cssrs_low_is_not_a_safety_alert():
    recommendation = recommend_level_of_care(replace(MILD, cssrs_risk="low"))
    assert (recommendation.disposition, recommendation.safety_alert) == ("iop", False)


def test_every_rule_is_written_in_the_clinician_table():
    doc = TRIAGE_DOC.read_text(encoding="utf-8")
    for reason in (*(rule.reason for rule in (*SAFETY_RULES, *HIGHER_LEVEL_RULES)), MILD_EVERYWHERE):
        assert reason in doc


# From answers to findings.
def intake_answers(**overrides):
    answers = {
        "withdrawal-history": [True], "withdrawal-seizures": [False], "withdrawal-dts": [False],
        "needs-24h-medical-monitoring": [False], "psychosis-or-mania": [False],
        "unable-to-take-part-safely": [False], "safe-housing": [True], "family-involvement": [True],
        "available-days": [{"code": "fri"}, {"code": "mon"}, {"code": "wed"}],
        "trauma-exposure": [True], **{f"ptsd5-q{n}": [YES if n <= 3 else NO] for n in range(1, 6)},
        "auditc-q1": [{"code": "LA18929-2"}], "auditc-q2": [{"code": "LA15694-5"}],
        "auditc-q3": [{"code": "LA6270-8"}], "administrative-sex": [{"code": "male"}],
    }
    return answers | overrides


def test_findings_from_intake():
    answers = intake_answers()
    findings = findings_from_intake(answers, score_intake(answers))
    assert findings == Findings(audit_c_positive=True, trauma_positive=True, family_involvement=True,
                                preferred_days=("mon", "wed", "fri"))


@pytest.mark.parametrize("overrides, field", [
    ({"withdrawal-seizures": [True]}, "withdrawal_seizures_or_dts"),
    ({"withdrawal-dts": [True]}, "withdrawal_seizures_or_dts"),
    ({"needs-24h-medical-monitoring": [True]}, "needs_24h_medical_monitoring"),
    ({"psychosis-or-mania": [True]}, "psychosis_or_mania"),
    ({"unable-to-take-part-safely": [True]}, "unable_to_take_part_safely"),
    ({"safe-housing": [False]}, "unsafe_environment"),
    ({"repeated-iop-without-progress": [True]}, "repeated_iop_without_progress"),
])
def test_findings_read_each_higher_level_answer(overrides, field):
    answers = intake_answers(**overrides)
    assert getattr(findings_from_intake(answers, score_intake(answers)), field) is True


def test_unanswered_housing_is_not_read_as_unsafe():
    answers = {key: value for key, value in intake_answers().items() if key != "safe-housing"}
    findings = findings_from_intake(answers, score_intake(answers))
    assert (findings.unsafe_environment, findings.family_involvement) == (False, True)
    assert findings_from_intake({}, score_intake({})).family_involvement is None
