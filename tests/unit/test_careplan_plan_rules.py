"""Drafting the IOP plan: given an admitted assessment, then an episode, a plan and goals exist."""
from __future__ import annotations

import copy
import itertools
from dataclasses import replace
from datetime import date

import pytest
from fhir.resources.R4B.careplan import CarePlan
from fhir.resources.R4B.episodeofcare import EpisodeOfCare
from fhir.resources.R4B.goal import Goal

from services.careplan.assessment import Assessment
from services.careplan.plan_rules import (
    GOAL_BASELINE,
    IOP_MEASURE,
    SKILL_MODULE,
    NotAnIopAdmission,
    PlanIds,
    draft_plan,
    intensity_issues,
    program_days,
    skill_modules,
    weekly_hours,
)
from shared import codes

START = date(2025, 3, 3)
BASE = Assessment("pat-1", "qr-1", "2.1", "iop", {codes.PHQ9_TOTAL: 4, codes.GAD7_TOTAL: 3})
IDS = PlanIds.derived_from("qr-1")


def _draft(**changes):
    return draft_plan(replace(BASE, **changes), START, IDS)


def _codes(activity: dict) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in activity["detail"]["code"]["coding"]}


def _activity(plan, code: str) -> dict | None:
    return next((a for a in plan.careplan["activity"] if code in {c for _, c in _codes(a)}), None)


def _modules(plan) -> list[str]:
    return [c["code"] for a in plan.careplan["activity"] for c in a["detail"]["code"]["coding"]
            if c["system"] == SKILL_MODULE]


def _goal(plan, code: str) -> dict | None:
    return next((g for g in plan.goals if g["target"][0]["measure"]["coding"][0]["code"] == code), None)


FULL = dict(scores={codes.PHQ9_TOTAL: 18, codes.GAD7_TOTAL: 12}, family_involvement=True, trauma_positive=True,
            alcohol_use_positive=True, drug_use_level="severe", preferred_days=["tue", "thu", "sat"])


@pytest.mark.parametrize("changes", [{}, FULL])
def test_every_drafted_resource_parses_as_fhir_r4(changes):
    plan = _draft(**changes)
    CarePlan.model_validate(plan.careplan)
    EpisodeOfCare.model_validate(plan.episode)
    for goal in plan.goals:
        Goal.model_validate(goal)


def test_every_resource_carries_the_part2_labels_as_its_own_copy():
    plan = _draft(**FULL)
    for resource in plan.resources():
        assert resource["meta"]["security"] == codes.PART2_LABELS
    plan.careplan["meta"]["security"][0]["code"] = "N"
    assert codes.PART2_LABELS[0]["code"] == "R" and plan.episode["meta"]["security"][0]["code"] == "R"


def test_the_draft_is_deterministic_so_a_redelivered_event_drafts_the_same_resources():
    assert _draft(**FULL) == _draft(**FULL)
    assert PlanIds.derived_from("qr-1") == IDS and PlanIds.derived_from("qr-2").careplan != IDS.careplan


def test_only_an_iop_admission_gets_a_plan():
    with pytest.raises(NotAnIopAdmission, match="higher-level"):
        _draft(disposition="higher-level")
    with pytest.raises(NotAnIopAdmission):
        _draft(safety_alert=True)


def test_the_episode_is_an_active_asam_2_1_episode_for_the_patient():
    episode = _draft().episode
    assert episode["id"] == IDS.episode and episode["status"] == "active"
    level = episode["type"][0]["coding"][0]
    assert (level["system"], level["code"], level["version"]) == (codes.ASAM_LEVEL, "2.1", codes.ASAM_EDITION)
    assert episode["patient"] == {"reference": "Patient/pat-1"}
    assert episode["period"] == {"start": "2025-03-03"}
    assert episode["identifier"] == [{"system": f"{codes.IOP_IDENTIFIER}/intake-assessment", "value": "qr-1"}]


def test_the_careplan_is_an_active_8_week_us_core_plan():
    careplan = _draft(**FULL).careplan
    assert (careplan["id"], careplan["status"], careplan["intent"]) == (IDS.careplan, "active", "plan")
    categories = {(c["coding"][0]["system"], c["coding"][0]["code"]) for c in careplan["category"]}
    assert {(codes.CAREPLAN_CATEGORY_US_CORE, "assess-plan"), (codes.SNOMED, "718347000")} <= categories
    assert careplan["subject"] == {"reference": "Patient/pat-1"}
    assert careplan["period"] == {"start": "2025-03-03", "end": "2025-04-27"}  # 56 days, end inclusive


def test_the_narrative_is_generated_and_names_no_patient():
    text = _draft(**FULL).careplan["text"]
    assert text["status"] == "generated" and text["div"].startswith('<div xmlns="http://www.w3.org/1999/xhtml">')
    assert "pat-1" not in text["div"] and "qr-1" not in text["div"]
    assert "Group psychotherapy: 3 a week on tue, thu, sat, 3 h" in text["div"]
    assert "PHQ-9 total score below 10" in text["div"]


def test_the_plan_references_each_goal_and_every_activity_works_toward_attendance():
    plan = _draft(**FULL)
    goal_refs = [{"reference": f"Goal/{g['id']}", "display": g["description"]["text"]} for g in plan.goals]
    assert plan.careplan["goal"] == goal_refs
    attendance = f"Goal/{IDS.goals['attendance']}"
    for activity in plan.careplan["activity"]:
        assert attendance in [r["reference"] for r in activity["detail"]["goal"]]


def test_group_and_individual_therapy_are_always_scheduled_on_the_program_days():
    plan = _draft()
    group, individual = _activity(plan, "90853"), _activity(plan, "90834")
    assert _codes(group) == {(codes.CPT, "90853"), (codes.SNOMED, "76168009")}
    assert _codes(individual) == {(codes.CPT, "90834"), (codes.SNOMED, "18512000")}
    assert group["detail"]["kind"] == "ServiceRequest" and group["detail"]["status"] == "scheduled"
    assert group["detail"]["scheduledTiming"]["repeat"] == {
        "boundsPeriod": {"start": "2025-03-03", "end": "2025-04-27"}, "frequency": 3, "period": 1,
        "periodUnit": "wk", "dayOfWeek": ["mon", "wed", "fri"], "timeOfDay": ["09:00:00"], "duration": 3.0,
        "durationUnit": "h"}
    assert individual["detail"]["scheduledTiming"]["repeat"]["dayOfWeek"] == ["mon"]


@pytest.mark.parametrize("family, expected", [(True, True), (False, False)])
def test_family_therapy_only_when_family_involvement_is_indicated(family, expected):
    family_therapy = _activity(_draft(family_involvement=family), "90847")
    assert (family_therapy is not None) is expected
    if family_therapy:
        assert (codes.SNOMED, "108313002") in _codes(family_therapy)


@pytest.mark.parametrize("changes, module, chosen", [
    ({}, "coping-skills", True),
    ({"alcohol_use_positive": True}, "relapse-prevention", True),
    ({"drug_use_level": "moderate"}, "relapse-prevention", True),
    ({"drug_use_level": "low"}, "relapse-prevention", False),
    ({"scores": {codes.PHQ9_TOTAL: 10}}, "mindfulness", True),
    ({"scores": {codes.GAD7_TOTAL: 10}}, "mindfulness", True),
    ({"scores": {codes.PHQ9_TOTAL: 9, codes.GAD7_TOTAL: 9}}, "mindfulness", False),
    ({"family_involvement": True}, "communication", True),
    ({}, "communication", False),
    ({"drug_use_level": "substantial"}, "life-skills", True),
    ({"drug_use_level": "severe"}, "life-skills", True),
    ({"drug_use_level": "moderate"}, "life-skills", False),
    ({"trauma_positive": True}, "trauma-informed", True),
    ({}, "trauma-informed", False),
])
def test_psychoeducation_modules_follow_the_findings(changes, module, chosen):
    plan = _draft(**changes)
    assert (module in _modules(plan)) is chosen
    assert (module in skill_modules(replace(BASE, **changes))) is chosen


def test_psychoeducation_is_billed_h2027_with_snomed_relapse_prevention_for_each_substance():
    plan = _draft(alcohol_use_positive=True, drug_use_level="severe")
    relapse = next(a for a in plan.careplan["activity"] if (SKILL_MODULE, "relapse-prevention") in _codes(a))
    assert {(codes.HCPCS, "H2027"), (codes.SNOMED, "720176005"), (codes.SNOMED, "720177001")} <= _codes(relapse)
    only_alcohol = _draft(alcohol_use_positive=True)
    relapse = next(a for a in only_alcohol.careplan["activity"] if (SKILL_MODULE, "relapse-prevention") in _codes(a))
    assert (codes.SNOMED, "720177001") not in _codes(relapse)


def test_modules_rotate_over_the_program_days_and_a_second_round_starts_an_hour_later():
    plan = _draft(**FULL)
    slots = [(a["detail"]["scheduledTiming"]["repeat"]["dayOfWeek"], a["detail"]["scheduledTiming"]["repeat"]
              ["timeOfDay"]) for a in plan.careplan["activity"] if (codes.HCPCS, "H2027") in _codes(a)]
    assert slots == [(["tue"], ["13:00:00"]), (["thu"], ["13:00:00"]), (["sat"], ["13:00:00"]),
                     (["tue"], ["14:00:00"]), (["thu"], ["14:00:00"]), (["sat"], ["14:00:00"])]


@pytest.mark.parametrize("score, drafted", [(10, True), (9, False)])
@pytest.mark.parametrize("loinc", [codes.PHQ9_TOTAL, codes.GAD7_TOTAL])
def test_a_symptom_goal_below_10_by_week_8_when_the_score_is_10_or_more(loinc, score, drafted):
    goal = _goal(_draft(scores={loinc: score}), loinc)
    assert (goal is not None) is drafted
    if goal:
        assert goal["target"][0]["detailQuantity"]["comparator"] == "<"
        assert goal["target"][0]["detailQuantity"]["value"] == 10
        assert goal["target"][0]["dueDate"] == "2025-04-27"
        assert goal["extension"] == [{"url": GOAL_BASELINE, "valueInteger": score}]


def test_an_attendance_goal_of_80_percent_is_always_drafted():
    goal = _goal(_draft(), "attendance-rate")
    assert goal["target"][0]["measure"]["coding"][0]["system"] == IOP_MEASURE
    assert goal["target"][0]["detailQuantity"] == {"value": 80, "comparator": ">=", "unit": "%",
                                                   "system": "http://unitsofmeasure.org", "code": "%"}


@pytest.mark.parametrize("changes, drafted", [
    ({"alcohol_use_positive": True}, True), ({"drug_use_level": "moderate"}, True),
    ({"drug_use_level": "low"}, False), ({}, False),
])
def test_an_abstinence_goal_when_alcohol_or_drug_use_is_positive(changes, drafted):
    assert (_goal(_draft(**changes), "days-abstinent") is not None) is drafted


def test_goals_are_active_behavioural_us_core_goals():
    for goal in _draft(**FULL).goals:
        assert goal["lifecycleStatus"] == "active"
        assert goal["achievementStatus"]["coding"][0] == {"system": codes.GOAL_ACHIEVEMENT, "code": "in-progress",
                                                          "display": "In Progress"}
        assert goal["category"][0]["coding"][0]["code"] == "behavioral"
        assert goal["description"]["text"] and goal["subject"] == {"reference": "Patient/pat-1"}
        assert goal["startDate"] == "2025-03-03"


def test_a_missing_goal_id_is_a_caller_error():
    with pytest.raises(ValueError, match="attendance"):
        draft_plan(BASE, START, PlanIds("e", "c", {}))


@pytest.mark.parametrize("preferred, days", [
    ([], ["mon", "wed", "fri"]),
    (["tue", "thu"], ["mon", "tue", "thu"]),
    (["mon", "tue", "wed", "thu", "fri"], ["mon", "wed", "fri"]),
    (["tue", "wed", "thu", "sat"], ["tue", "wed", "thu"]),
    (["sat", "sun"], ["mon", "sat", "sun"]),
])
def test_three_program_days_from_the_preferred_days(preferred, days):
    assert program_days(preferred) == days


FINDINGS = list(itertools.product([False, True], [False, True], [None, "low", "moderate", "substantial"],
                                  [False, True], [False, True]))


@pytest.mark.parametrize("family, alcohol, drugs, trauma, symptoms", FINDINGS)
def test_weekly_hours_stay_within_iop_intensity_for_every_combination(family, alcohol, drugs, trauma, symptoms):
    scores = {codes.PHQ9_TOTAL: 15 if symptoms else 3}
    plan = _draft(family_involvement=family, alcohol_use_positive=alcohol, drug_use_level=drugs,
                  trauma_positive=trauma, scores=scores)
    modules = 1 + (alcohol or drugs in ("moderate", "substantial")) + symptoms + family + (drugs == "substantial") \
        + trauma
    assert weekly_hours(plan.careplan) == 9 + 0.75 + family + modules  # group 3x3 h, individual 45 min, 1 h each
    assert 9 <= weekly_hours(plan.careplan) <= 19
    assert intensity_issues(plan.careplan) == []


def test_weekly_hours_count_only_live_activities_and_convert_units():
    careplan = copy.deepcopy(_draft().careplan)
    careplan["activity"][0]["detail"]["status"] = "stopped"  # group: 9 h
    repeat = careplan["activity"][1]["detail"]["scheduledTiming"]["repeat"]
    repeat.update(duration=90, durationUnit="min", frequency=4, period=2, periodUnit="wk")  # 2 x 1.5 h a week
    assert weekly_hours(careplan) == 3 + 1  # + coping skills


def test_a_revision_below_iop_intensity_is_a_business_rule_issue():
    careplan = copy.deepcopy(_draft().careplan)
    careplan["activity"][0]["detail"]["status"] = "cancelled"
    [issue] = intensity_issues(careplan)
    assert issue.code == "business-rule" and issue.expression == "CarePlan.activity"
    assert "1.75 hours" in issue.diagnostics
