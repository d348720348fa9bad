"""Graduation: given a plan near its end, when graduation is asked for, then it is allowed or refused per criterion."""
from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from fhir.resources.R4B.careplan import CarePlan
from fhir.resources.R4B.episodeofcare import EpisodeOfCare
from fhir.resources.R4B.goal import Goal

from services.careplan.assessment import Assessment
from services.careplan.graduation import check_graduation, graduate
from services.careplan.plan_rules import PlanIds, draft_plan
from services.careplan.progress import SessionOutcome, achievement, apply_session_outcome, with_achievement
from shared import codes

PLAN = draft_plan(Assessment("pat-1", "qr-1", "2.1", "iop", {codes.PHQ9_TOTAL: 16, codes.GAD7_TOTAL: 12},
                             alcohol_use_positive=True), date(2025, 3, 3), PlanIds.derived_from("qr-1"))
DEPRESSION, ANXIETY, ABSTINENCE, ATTENDANCE = range(4)  # positions in CarePlan.goal
WEEK_7 = date(2025, 4, 17)


def _goals(*statuses: str) -> list[dict]:
    return [with_achievement(goal, status) for goal, status in zip(PLAN.goals, statuses, strict=True)]


MET = ("achieved", "sustaining", "achieved", "in-progress")  # the attendance goal is judged from the sessions


def _check(goals=None, rate=0.85, override=None, today=WEEK_7, careplan=None):
    return check_graduation(careplan or PLAN.careplan, goals or _goals(*MET), rate, override, today=today)


def test_with_every_criterion_met_the_patient_may_graduate():
    decision = _check()
    assert decision.eligible and decision.failed == [] and decision.override_reason is None


@pytest.mark.parametrize("rate, shown", [(0.79, "79% of sessions attended"), (None, "no sessions held yet")])
def test_attendance_below_80_percent_fails_on_the_attendance_goal(rate, shown):
    [issue] = _check(rate=rate).failed
    assert issue.code == "business-rule" and issue.expression == f"CarePlan.goal[{ATTENDANCE}]"
    assert shown in issue.diagnostics


def test_fewer_than_6_weeks_in_the_program_fails():
    [issue] = _check(today=date(2025, 4, 13)).failed  # 5 weeks and 6 days
    assert issue.expression == "CarePlan.period.start" and "5 so far" in issue.diagnostics
    assert _check(today=date(2025, 4, 14)).failed == []


@pytest.mark.parametrize("statuses, failing", [
    (("worsening", "achieved", "achieved", "in-progress"), [DEPRESSION]),
    (("no-change", "achieved", "achieved", "in-progress"), [DEPRESSION]),
    (("improving", "achieved", "achieved", "in-progress"), []),                  # one may still be improving
    (("improving", "improving", "achieved", "in-progress"), [ANXIETY]),          # not two
    (("achieved", "sustaining", "in-progress", "in-progress"), [ABSTINENCE]),    # abstinence is clinician-judged
])
def test_each_measurable_goal_must_be_achieved_or_sustaining(statuses, failing):
    failed = _check(goals=_goals(*statuses)).failed
    assert [i.expression for i in failed] == [f"CarePlan.goal[{i}]" for i in failing]
    assert all(i.code == "business-rule" for i in failed)


def test_goals_no_longer_active_do_not_count_and_missing_goals_cannot_be_judged():
    goals = _goals("worsening", *MET[1:])
    goals[DEPRESSION]["lifecycleStatus"] = "cancelled"
    assert _check(goals=goals).failed == []
    [issue] = _check(goals=goals[1:]).failed
    assert (issue.code, issue.expression) == ("not-found", f"CarePlan.goal[{DEPRESSION}]")


def test_a_clinicians_override_with_a_reason_passes_and_keeps_the_unmet_criteria():
    decision = _check(rate=0.5, override="  stable for 4 weeks; moving out of state  ")
    assert decision.eligible and decision.override_reason == "stable for 4 weeks; moving out of state"
    assert [i.expression for i in decision.failed] == [f"CarePlan.goal[{ATTENDANCE}]"]


@pytest.mark.parametrize("override", [None, "", "   "])
def test_an_override_without_a_reason_is_no_override(override):
    assert not _check(rate=0.5, override=override).eligible


def test_a_plan_that_is_not_active_cannot_graduate_even_on_override():
    decision = _check(careplan={**PLAN.careplan, "status": "completed"}, override="clinician says so")
    assert not decision.eligible
    assert [(i.code, i.expression) for i in decision.failed] == [("business-rule", "CarePlan.status")]


def _attended_plan(attended: int, missed: int) -> dict:
    careplan = PLAN.careplan
    for n in range(attended + missed):
        session = SessionOutcome(f"enc-{n}", "finished" if n < attended else "cancelled",
                                 f"2025-03-{3 + n:02d}", PLAN.careplan["id"], 0, no_show=n >= attended)
        careplan, _ = apply_session_outcome(careplan, session)
    return careplan


NOW = datetime(2025, 4, 24, 15, 30, tzinfo=UTC)


def test_graduation_completes_the_plan_finishes_the_episode_and_completes_the_goals():
    careplan = _attended_plan(attended=5, missed=1)
    done = graduate(careplan, PLAN.episode, _goals("achieved", "sustaining", "improving", "in-progress"), NOW)

    assert done.careplan["status"] == "completed"
    assert done.careplan["period"] == {"start": "2025-03-03", "end": "2025-04-24"}
    assert [a["detail"]["status"] for a in done.careplan["activity"]][:2] == ["completed", "cancelled"]
    assert "note" not in done.careplan and "completed" in done.careplan["text"]["div"]
    assert done.episode["status"] == "finished" and done.episode["period"]["end"] == "2025-04-24"
    assert done.episode["statusHistory"] == [{"status": "active",
                                              "period": {"start": "2025-03-03", "end": "2025-04-24"}}]
    assert [(g["lifecycleStatus"], achievement(g), g["statusDate"]) for g in done.goals] == [
        ("completed", "achieved", "2025-04-24"), ("completed", "sustaining", "2025-04-24"),
        ("completed", "not-achieved", "2025-04-24"), ("completed", "achieved", "2025-04-24")]  # 5 of 6 attended
    CarePlan.model_validate(done.careplan)
    EpisodeOfCare.model_validate(done.episode)
    for goal in done.goals:
        Goal.model_validate(goal)


def test_low_attendance_leaves_the_attendance_goal_not_achieved_and_an_override_is_noted():
    careplan = _attended_plan(attended=1, missed=3)
    done = graduate(careplan, PLAN.episode, _goals(*MET), NOW, override_reason="relocating")
    assert achievement(done.goals[ATTENDANCE]) == "not-achieved"
    assert done.careplan["note"] == [{"time": "2025-04-24T15:30:00+00:00",
                                      "text": "Graduated on a clinician's override: relocating"}]


def test_graduation_leaves_cancelled_goals_and_its_inputs_alone():
    goals = _goals(*MET)
    goals[ABSTINENCE]["lifecycleStatus"] = "entered-in-error"
    done = graduate(PLAN.careplan, PLAN.episode, goals, NOW)
    assert done.goals[ABSTINENCE] == goals[ABSTINENCE]
    assert PLAN.careplan["status"] == "active" and PLAN.episode["status"] == "active"


def test_only_an_active_plan_can_be_graduated():
    with pytest.raises(ValueError, match="not active"):
        graduate({**PLAN.careplan, "status": "revoked"}, PLAN.episode, PLAN.goals, NOW)
