"""Graduation: the criteria for stepping down from IOP, and closing the plan (docs/careplan-rules.md, "Graduation").

DOMAIN.md 6.3: close the IOP EpisodeOfCare, complete the CarePlan, set each Goal to achieved, sustaining or
not-achieved. The step-down plan itself is aftercare's, from `iop.careplan.graduated`.
"""
from __future__ import annotations

import calendar
import copy
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from services.careplan.plan_rules import IOP_MEASURE, narrative
from services.careplan.progress import SESSION_ATTENDANCE, achievement, attendance_rate, with_achievement
from shared.fhir.outcome import Issue
from shared.fhir.util import ref_id

MIN_ATTENDANCE = 0.8      # the attendance goal every plan carries
MIN_WEEKS = 6             # of the 8 planned: early graduation is allowed once the goals are met
IMPROVING_ALLOWED = 1     # one measurable goal may still be improving (a response, short of the target)
MET = frozenset({"achieved", "sustaining"})
_CLOSED = frozenset({"cancelled", "entered-in-error", "rejected"})  # goals that no longer count
# An activity still open at graduation: begun ones are completed, never-begun ones withdrawn (FHIR "cancelled").
_FINAL_ACTIVITY = {"in-progress": "completed", "on-hold": "stopped", "scheduled": "cancelled",
                   "not-started": "cancelled"}


@dataclass(frozen=True)
class GraduationDecision:
    eligible: bool
    failed: list[Issue]               # every unmet criterion, kept even when a clinician overrides
    override_reason: str | None = None  # set only when the override is what made the patient eligible


@dataclass(frozen=True)
class Graduation:
    careplan: dict[str, Any]
    episode: dict[str, Any]
    goals: list[dict[str, Any]]


def check_graduation(careplan: dict[str, Any], goals: list[dict[str, Any]], attendance_rate: float | None,
                     override_reason: str | None = None, *, today: date) -> GraduationDecision:
    """Eligible when every criterion holds, or a clinician overrides with a reason; an inactive plan never is."""
    if careplan.get("status") != "active":
        status = careplan.get("status")
        return GraduationDecision(False, [Issue(f"only an active CarePlan can graduate; this one is {status}",
                                                "business-rule", expression="CarePlan.status")])
    failed = [*_attendance_issues(careplan, goals, attendance_rate), *_stay_issues(careplan, today),
              *_goal_issues(careplan, goals)]
    reason = (override_reason or "").strip() or None
    return GraduationDecision(not failed or reason is not None, failed, reason if failed else None)


def graduate(careplan: dict[str, Any], episode: dict[str, Any], goals: list[dict[str, Any]], now: datetime,
             override_reason: str | None = None) -> Graduation:
    """The completed CarePlan, the finished EpisodeOfCare and the completed Goals (new dicts)."""
    if careplan.get("status") != "active":
        raise ValueError(f"CarePlan/{careplan.get('id')} is {careplan.get('status')}, not active")
    day = now.date().isoformat()
    rate = attendance_rate(careplan)
    return Graduation(_completed_plan(careplan, now, override_reason), _finished_episode(episode, day),
                      [_final_goal(g, rate, day) for g in goals])


def _attendance_issues(careplan: dict[str, Any], goals: list[dict[str, Any]], rate: float | None) -> list[Issue]:
    if rate is not None and rate >= MIN_ATTENDANCE:
        return []
    index = next((i for i, g in _plan_goals(careplan, goals) if g and _is_attendance(g)), None)
    where = f"CarePlan.goal[{index}]" if index is not None else f"CarePlan.extension('{SESSION_ATTENDANCE}')"
    held = "no sessions held yet" if rate is None else f"{rate:.0%} of sessions attended"
    return [Issue(f"attendance must be at least {MIN_ATTENDANCE:.0%}: {held}", "business-rule", expression=where)]


def _stay_issues(careplan: dict[str, Any], today: date) -> list[Issue]:
    start = careplan.get("period", {}).get("start")
    weeks = max(0, (today - _latest_day(start)).days // 7) if start else 0
    if weeks >= MIN_WEEKS:
        return []
    return [Issue(f"at least {MIN_WEEKS} weeks in the program are needed: {weeks} so far", "business-rule",
                  expression="CarePlan.period.start")]


def _latest_day(start: str) -> date:
    """The last day a (possibly partial) FHIR date can mean: `2024` counts from 2024-12-31, so a stay is never
    overstated. The time and zone of a dateTime do not move the day by more than the rule can tell."""
    year, month, day = (start[:10].split("-") + [None, None])[:3]
    y, m = int(year), int(month or 12)
    return date(y, m, int(day) if day else calendar.monthrange(y, m)[1])


def _goal_issues(careplan: dict[str, Any], goals: list[dict[str, Any]]) -> list[Issue]:
    issues, improving = [], 0
    for index, goal in _plan_goals(careplan, goals):
        where = f"CarePlan.goal[{index}]"
        if goal is None:
            issues.append(Issue("the plan's goal was not supplied, so it cannot be judged", "not-found",
                                expression=where))
        elif _measurable(goal) and achievement(goal) not in MET:
            improving += achievement(goal) == "improving"
            if achievement(goal) != "improving" or improving > IMPROVING_ALLOWED:
                issues.append(Issue(f"goal '{goal.get('description', {}).get('text', '')}' is "
                                    f"{achievement(goal)}, not achieved or sustaining", "business-rule",
                                    expression=where))
    return issues


def _plan_goals(careplan: dict[str, Any], goals: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any] | None]]:
    """Each Goal the CarePlan references, by its position in CarePlan.goal; None when it was not supplied."""
    by_id = {g.get("id"): g for g in goals}
    return [(i, by_id.get(ref_id(r))) for i, r in enumerate(careplan.get("goal", []))]


def _measurable(goal: dict[str, Any]) -> bool:
    """A live goal with a measure; attendance is judged from the sessions themselves, not from its status."""
    has_measure = any("measure" in t for t in goal.get("target", []))
    return goal.get("lifecycleStatus") not in _CLOSED and has_measure and not _is_attendance(goal)


def _is_attendance(goal: dict[str, Any]) -> bool:
    return any(c.get("system") == IOP_MEASURE and c.get("code") == "attendance-rate"
               for t in goal.get("target", []) for c in t.get("measure", {}).get("coding", []))


def _completed_plan(careplan: dict[str, Any], now: datetime, override_reason: str | None) -> dict[str, Any]:
    plan = copy.deepcopy(careplan)
    plan["status"] = "completed"
    plan["period"] = {**plan.get("period", {}), "end": now.date().isoformat()}  # the actual end, not the planned
    for activity in plan.get("activity", []):
        detail = activity.get("detail", {})
        detail["status"] = _FINAL_ACTIVITY.get(detail.get("status"), detail.get("status"))
    if override_reason and override_reason.strip():
        note = {"time": now.isoformat(), "text": f"Graduated on a clinician's override: {override_reason.strip()}"}
        plan["note"] = [*plan.get("note", []), note]
    plan["text"] = narrative(plan)
    return plan


def _finished_episode(episode: dict[str, Any], day: str) -> dict[str, Any]:
    finished = copy.deepcopy(episode)
    period = {**finished.get("period", {}), "end": day}
    history = {"status": finished.get("status", "active"), "period": period}
    return {**finished, "status": "finished", "period": period,
            "statusHistory": [*finished.get("statusHistory", []), history]}


def _final_goal(goal: dict[str, Any], rate: float | None, day: str) -> dict[str, Any]:
    if goal.get("lifecycleStatus") in _CLOSED:
        return copy.deepcopy(goal)
    if _is_attendance(goal):
        status = "achieved" if rate is not None and rate >= MIN_ATTENDANCE else "not-achieved"
    else:
        status = achievement(goal) if achievement(goal) in MET else "not-achieved"
    return {**with_achievement(goal, status), "lifecycleStatus": "completed", "statusDate": day}
