"""Scoring of the intake screens: published examples, every band boundary, the reverse-scored DAST item."""
import pytest

from services.intake import scoring
from services.intake.questionnaires import IOP_INTAKE_URL, PHQ9_URL, iter_items, load_catalogue
from services.intake.scoring import (
    AUDIT_C_POINTS,
    FREQUENCY,
    UnscoreableAnswer,
    answers_by_link_id,
    score_audit_c,
    score_cssrs,
    score_dast10,
    score_gad7,
    score_intake,
    score_pc_ptsd5,
    score_phq9,
)

LOINC = "http://loinc.org"
FREQ_CODES = {points: code for code, points in FREQUENCY.items()}
YES, NO = {"system": LOINC, "code": "LA33-6"}, {"system": LOINC, "code": "LA32-8"}
ORDINAL = "http://hl7.org/fhir/StructureDefinition/ordinalValue"


def loinc(code):
    return {"system": LOINC, "code": code}


def frequency_answers(prefix, count, total):
    """Answers to a 0-3 scale whose points add up to total, filling the first items first."""
    answers = {}
    for n in range(1, count + 1):
        points = min(3, total)
        total -= points
        answers[f"{prefix}-q{n}"] = [loinc(FREQ_CODES[points])]
    return answers


def dast_answers(total):
    """DAST-10 answers reaching total; Q3 answered Yes (0 points) unless the total needs all ten."""
    answers = {"dast10-q3": [NO if total == 10 else YES]}
    others = [n for n in range(1, 11) if n != 3]
    yes_needed = total - (1 if total == 10 else 0)
    for index, n in enumerate(others):
        answers[f"dast10-q{n}"] = [YES if index < yes_needed else NO]
    return answers


def cssrs(**yes):
    """C-SSRS answers: items named in yes get Yes or No as given, the base items default to No."""
    answers = {f"cssrs-q{n}": [NO] for n in (1, 2, 6)}
    answers.update({f"cssrs-{key.replace('_', '-')}": [YES if value else NO] for key, value in yes.items()})
    return answers


# Given the US Core PHQ-9 example QuestionnaireResponse (HL7/US-Core
# input/examples/QuestionnaireResponse-phq-9-example.json), answers by LOINC item code.
US_CORE_PHQ9_ANSWERS = {
    "44250-9": "LA6570-1", "44255-8": "LA6570-1", "44259-0": "LA6570-1", "44254-1": "LA6570-1",
    "44251-7": "LA6569-3", "44258-2": "LA6569-3", "44252-5": "LA6570-1", "44253-3": "LA6568-5",
    "44260-8": "LA6568-5",
}


def link_ids_by_loinc(url):
    questionnaire = load_catalogue()[url]
    return {item["code"][0]["code"]: item["linkId"] for item in iter_items(questionnaire["item"]) if "code" in item}


@pytest.mark.parametrize("url", [IOP_INTAKE_URL, PHQ9_URL])
def test_us_core_phq9_example_scores_12_moderate(url):
    by_loinc = link_ids_by_loinc(url)
    answers = {by_loinc[code]: [loinc(answer)] for code, answer in US_CORE_PHQ9_ANSWERS.items()}

    result = score_phq9(answers)

    # US Core Observation-PHQ9-item-example-44261-6 records the total as "12".
    assert (result.total, result.band, result.item9, result.complete) == (12, "moderate", 0, True)


def test_us_core_audit_c_example_scores_0():
    # HL7/US-Core QuestionnaireResponse-AUDIT-C.json: 68517-2 is not an AUDIT-C item (DOMAIN.md 1.3),
    # so only Q2 (1 or 2 drinks) and Q3 (Never) count; US Core's total (75626-2) is 0.
    qr = {"item": [
        {"linkId": "/68517-2", "answer": [{"valueDecimal": 0}]},
        {"linkId": "/68519-8", "answer": [{"valueCoding": loinc("LA15694-5")}]},
        {"linkId": "/68520-6", "answer": [{"valueCoding": loinc("LA6270-8")}]},
    ]}
    by_loinc = link_ids_by_loinc(IOP_INTAKE_URL)
    answers = {by_loinc[k.strip("/")]: v for k, v in answers_by_link_id(qr).items() if k.strip("/") in by_loinc}

    result = score_audit_c(answers, "female")

    assert (result.total, result.band, result.missing) == (0, "negative", ("auditc-q1",))


@pytest.mark.parametrize("total, band", [(0, "minimal"), (4, "minimal"), (5, "mild"), (9, "mild"), (10, "moderate"),
                                         (14, "moderate"), (15, "moderately-severe"), (19, "moderately-severe"),
                                         (20, "severe"), (27, "severe")])
def test_phq9_band_boundaries(total, band):
    result = score_phq9(frequency_answers("phq9", 9, total))
    assert (result.total, result.band) == (total, band)


def test_phq9_exposes_item9_whatever_the_total():
    answers = frequency_answers("phq9", 9, 0) | {"phq9-q9": [loinc("LA6569-3")]}
    result = score_phq9(answers)
    assert (result.total, result.band, result.item9) == (1, "minimal", 1)


@pytest.mark.parametrize("total, band", [(0, "minimal"), (4, "minimal"), (5, "mild"), (9, "mild"), (10, "moderate"),
                                         (14, "moderate"), (15, "severe"), (21, "severe")])
def test_gad7_band_boundaries(total, band):
    result = score_gad7(frequency_answers("gad7", 7, total))
    assert (result.total, result.band) == (total, band)


def audit_c(q1, q2="LA15694-5", q3="LA6270-8"):
    return {"auditc-q1": [loinc(q1)], "auditc-q2": [loinc(q2)], "auditc-q3": [loinc(q3)]}


@pytest.mark.parametrize("sex, q1, positive", [
    ("male", "LA18928-4", False),     # 3 points: under the men's cut-off of 4
    ("male", "LA18929-2", True),      # 4 points
    ("female", "LA18927-6", False),   # 2 points: under the women's cut-off of 3
    ("female", "LA18928-4", True),    # 3 points
    (None, "LA18928-4", True),        # sex unknown: the lower cut-off, nobody under-screened
    ("other", "LA18927-6", False),
])
def test_audit_c_sex_specific_cut_off(sex, q1, positive):
    result = score_audit_c(audit_c(q1), sex)
    assert result.positive is positive
    assert result.band == ("positive" if positive else "negative")


def test_audit_c_flags_points_only_from_q1():
    only_q1 = score_audit_c(audit_c("LA18929-2"), "male")
    spread = score_audit_c(audit_c("LA18927-6", q2="LA15695-2", q3="LA18933-4"), "male")
    assert (only_q1.total, only_q1.positive, only_q1.points_only_from_q1) == (4, True, True)
    assert (spread.total, spread.points_only_from_q1) == (4, False)
    assert score_audit_c(audit_c("LA6270-8")).points_only_from_q1 is False


def test_audit_c_never_drinking_skips_q2_and_q3():
    result = score_audit_c({"auditc-q1": [loinc("LA6270-8")]}, "female")
    assert (result.total, result.band, result.complete) == (0, "negative", True)
    assert score_audit_c({"auditc-q1": [loinc("LA18926-8")]}).missing == ("auditc-q2", "auditc-q3")


def test_audit_c_maximum_is_12():
    assert score_audit_c(audit_c("LA18929-2", "LA18932-6", "LA18934-2")).total == 12


def test_dast10_item3_is_reverse_scored():
    all_no = {f"dast10-q{n}": [NO] for n in range(1, 11)}
    all_yes = {f"dast10-q{n}": [YES] for n in range(1, 11)}
    assert score_dast10(all_no).total == 1 and score_dast10(all_no).item_points["dast10-q3"] == 1
    assert score_dast10(all_yes).total == 9 and score_dast10(all_yes).item_points["dast10-q3"] == 0


@pytest.mark.parametrize("total, band", [(0, "none"), (1, "low"), (2, "low"), (3, "moderate"), (5, "moderate"),
                                         (6, "substantial"), (8, "substantial"), (9, "severe"), (10, "severe")])
def test_dast10_band_boundaries(total, band):
    result = score_dast10(dast_answers(total))
    assert (result.total, result.band) == (total, band)


@pytest.mark.parametrize("yes_count, band", [(0, "negative"), (2, "negative"), (3, "positive"), (5, "positive")])
def test_pc_ptsd5_positive_at_three(yes_count, band):
    answers = {"trauma-exposure": [True]} | {f"ptsd5-q{n}": [YES if n <= yes_count else NO] for n in range(1, 6)}
    result = score_pc_ptsd5(answers)
    assert (result.total, result.band, result.complete) == (yes_count, band, True)


def test_pc_ptsd5_without_trauma_exposure_is_a_complete_negative():
    result = score_pc_ptsd5({"trauma-exposure": [False]})
    assert (result.total, result.band, result.complete) == (0, "negative", True)


def test_pc_ptsd5_exposed_but_unanswered_is_incomplete():
    result = score_pc_ptsd5({"trauma-exposure": [True], "ptsd5-q1": [YES]})
    assert result.missing == ("ptsd5-q2", "ptsd5-q3", "ptsd5-q4", "ptsd5-q5")


@pytest.mark.parametrize("answers, risk", [
    (cssrs(), "none"),
    (cssrs(q1=True), "low"),
    (cssrs(q2=True, q3=False, q4=False, q5=False), "low"),
    (cssrs(q2=True, q3=True, q4=False, q5=False), "moderate"),
    (cssrs(q6=True, q6_recent=False), "moderate"),
    (cssrs(q2=True, q3=True, q4=True, q5=False), "high"),
    (cssrs(q2=True, q3=False, q4=False, q5=True), "high"),
    (cssrs(q6=True, q6_recent=True), "high"),
])
def test_cssrs_risk_levels(answers, risk):
    result = score_cssrs(answers)
    assert (result.risk, result.complete) == (risk, True)


def test_cssrs_behaviour_of_unknown_timing_counts_as_recent():
    result = score_cssrs(cssrs(q6=True))
    assert (result.risk, result.missing) == ("high", ("cssrs-q6-recent",))


def test_cssrs_thoughts_without_follow_up_answers_are_incomplete():
    result = score_cssrs(cssrs(q2=True))
    assert (result.risk, result.missing) == ("low", ("cssrs-q3", "cssrs-q4", "cssrs-q5"))


def test_us_behavioral_health_cssrs_example_all_no_is_none():
    # HL7/us-behavioral-health-profiles QuestionnaireResponse-C-SSRS-example-1: every item answered No.
    answers = {link_id: [NO] for link_id in ("cssrs-q1", "cssrs-q2", "cssrs-q3", "cssrs-q4", "cssrs-q5",
                                              "cssrs-q6", "cssrs-q6-recent")}
    assert score_cssrs(answers).risk == "none"


def test_cssrs_accepts_boolean_yes_no():
    assert score_cssrs({"cssrs-q1": [True], "cssrs-q2": [False], "cssrs-q6": [False]}).risk == "low"


def test_instrument_with_no_answers_is_not_administered():
    scores = score_intake({"administrative-sex": [{"code": "female"}]})
    assert scores == scoring.IntakeScores()
    assert scores.screens() == []


def test_partial_phq9_is_scored_but_incomplete():
    answers = {f"phq9-q{n}": [loinc("LA6571-9")] for n in (1, 2, 3)}
    result = score_phq9(answers)
    assert (result.total, result.complete, result.item9, len(result.missing)) == (9, False, None, 6)


def test_unscored_answer_is_refused_without_echoing_it():
    with pytest.raises(UnscoreableAnswer) as error:
        score_phq9({"phq9-q1": [loinc("LA9999-9")]})
    assert "phq9-q1" in str(error.value) and "LA9999-9" not in str(error.value)
    with pytest.raises(UnscoreableAnswer):
        score_dast10({"dast10-q1": [loinc("LA6568-5")]})


def test_score_intake_uses_the_intake_sex_unless_given():
    answers = audit_c("LA18928-4") | {"administrative-sex": [{"code": "male"}]}
    assert score_intake(answers).audit_c.positive is False
    assert score_intake(answers, sex="female").audit_c.positive is True


def test_answers_by_link_id_walks_groups_answers_and_repeats():
    qr = {"item": [
        {"linkId": "group", "item": [{"linkId": "q1", "answer": [{"valueBoolean": True}]}]},
        {"linkId": "q2", "answer": [{"valueCoding": loinc("A"), "item": [
            {"linkId": "q2-detail", "answer": [{"valueString": "x"}]}]}]},
        {"linkId": "provider", "item": [{"linkId": "name", "answer": [{"valueString": "A"}]}]},
        {"linkId": "provider", "item": [{"linkId": "name", "answer": [{"valueString": "B"}]}]},
        {"linkId": "unanswered"},
    ]}
    assert answers_by_link_id(qr) == {"q1": [True], "q2": [loinc("A")], "q2-detail": ["x"], "name": ["A", "B"]}


def ordinal_options(item):
    return {o["valueCoding"]["code"]: next(e["valueDecimal"] for e in o["extension"] if e["url"] == ORDINAL)
            for o in item["answerOption"]}


def test_questionnaire_ordinal_values_agree_with_scoring_tables():
    for url, questionnaire in load_catalogue().items():
        for item in iter_items(questionnaire["item"]):
            link_id = item["linkId"]
            if link_id.startswith(("phq9-q", "gad7-q")):
                assert ordinal_options(item) == FREQUENCY, (url, link_id)
            elif link_id in AUDIT_C_POINTS:
                assert ordinal_options(item) == AUDIT_C_POINTS[link_id], link_id
            elif link_id.startswith(("dast10-q", "ptsd5-q")):
                reversed_item = link_id == "dast10-q3"
                assert ordinal_options(item) == {"LA33-6": int(not reversed_item), "LA32-8": int(reversed_item)}
