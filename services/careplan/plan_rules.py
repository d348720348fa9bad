"""Drafting the IOP treatment plan from an intake assessment (docs/careplan-rules.md, "Plan drafting").

Pure: FHIR R4 JSON dicts in, dicts out. The caller supplies every id (PlanIds) so one assessment always drafts the
same resources, which makes a redelivered `iop.intake.assessed` harmless.
"""
from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from html import escape
from typing import Any

from services.careplan.assessment import WEEK_DAYS, Assessment, is_iop_admission
from shared import codes
from shared.fhir import uscore
from shared.fhir.outcome import Issue

PROGRAM_WEEKS = 8
DEFAULT_DAYS = ("mon", "wed", "fri")
_TOP_UP_DAYS = DEFAULT_DAYS + ("tue", "thu")  # weekends only when the patient asks for them
MIN_WEEKLY_HOURS, MAX_WEEKLY_HOURS = 9.0, 19.0  # ASAM 2.1 adult intensity (DOMAIN.md 2.1)
# Activities that still take the patient's time; the others no longer count toward the weekly hours.
COUNTED_STATUSES = frozenset({"not-started", "scheduled", "in-progress"})
SKILL_MODULE = f"{codes.CODE_BASE}/iop-skill-module"  # careplan's own: no standard codes for these modules
_WEEKS_PER_UNIT = {"s": 1 / 604800, "min": 1 / 10080, "h": 1 / 168, "d": 1 / 7, "wk": 1.0, "mo": 365.25 / 12 / 7,
                   "a": 365.25 / 7}
_HOURS_PER_UNIT = {"s": 1 / 3600, "min": 1 / 60, "h": 1.0, "d": 24.0, "wk": 168.0, "mo": 24 * 365.25 / 12,
                   "a": 24 * 365.25}
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, codes.CODE_BASE)
GOAL_KEYS = ("depression", "anxiety", "abstinence", "attendance")
GOAL_CATEGORY = "http://terminology.hl7.org/CodeSystem/goal-category"
GOAL_BASELINE = "https://iop-suite.org/fhir/StructureDefinition/goal-baseline"  # the intake score a goal starts from
IOP_MEASURE = f"{codes.CODE_BASE}/iop-measure"  # program measures with no LOINC code: attendance-rate, days-abstinent
UCUM = "http://unitsofmeasure.org"


class NotAnIopAdmission(ValueError):
    """The assessment does not admit the patient to IOP, so there is no IOP plan to draft."""


@dataclass(frozen=True)
class PlanIds:
    episode: str
    careplan: str
    goals: Mapping[str, str]  # goal key (GOAL_KEYS) -> Goal id

    @classmethod
    def derived_from(cls, seed: str) -> PlanIds:
        """The same ids every time one seed (e.g. the intake QuestionnaireResponse id) is drafted."""
        def make(name: str) -> str:
            return str(uuid.uuid5(_ID_NAMESPACE, f"{seed}/{name}"))
        return cls(make("episode"), make("careplan"), {k: make(f"goal/{k}") for k in GOAL_KEYS})


@dataclass(frozen=True)
class Service:
    key: str
    text: str
    codings: tuple[dict[str, str], ...]
    hours: float
    time_of_day: str
    goals: tuple[str, ...]  # goal keys it works toward; only drafted goals are referenced


@dataclass(frozen=True)
class GoalRule:
    key: str
    text: str
    measure: dict[str, str]
    target: dict[str, Any]  # Goal.target.detailQuantity
    baseline_code: str | None = None  # the LOINC score whose intake value is the goal's baseline


@dataclass(frozen=True)
class DraftPlan:
    episode: dict[str, Any]
    careplan: dict[str, Any]
    goals: list[dict[str, Any]]

    def resources(self) -> list[dict[str, Any]]:
        """CarePlan first: the focus of `iop.careplan.created`, then what a consumer needs with it."""
        return [self.careplan, self.episode, *self.goals]


def _code(system: str, code: str, display: str | None = None) -> dict[str, str]:
    return {"system": system, "code": code, **({"display": display} if display else {})}


# CPT descriptors are AMA-licensed (DOMAIN.md 3.1), so CPT codings carry no display.
_CLINICAL = ("depression", "anxiety", "abstinence")
GROUP = Service("group", "Group psychotherapy", (_code(codes.CPT, "90853"),
                _code(codes.SNOMED, "76168009", "Group psychotherapy")), 3.0, "09:00:00", _CLINICAL)
INDIVIDUAL = Service("individual", "Individual psychotherapy", (_code(codes.CPT, "90834"),
                     _code(codes.SNOMED, "18512000", "Individual psychotherapy")), 0.75, "15:00:00", _CLINICAL)
FAMILY = Service("family", "Family psychotherapy with patient", (_code(codes.CPT, "90847"),
                 _code(codes.SNOMED, "108313002", "Family psychotherapy procedure")), 1.0, "17:00:00", _CLINICAL)
_SERVICE_DAYS = {"group": slice(None), "individual": slice(0, 1), "family": slice(-1, None)}  # modules rotate
_PSYCHOEDUCATION = _code(codes.HCPCS, "H2027", "Psychoeducational service, per 15 minutes")
_MODULE_GOALS = {"coping-skills": _CLINICAL, "relapse-prevention": ("abstinence",), "mindfulness": _CLINICAL[:2],
                 "communication": _CLINICAL, "life-skills": ("abstinence",), "trauma-informed": _CLINICAL[:2]}
_MODULE_TEXT = {"coping-skills": "coping skills", "relapse-prevention": "relapse prevention",
                "mindfulness": "mindfulness", "communication": "family communication", "life-skills": "life skills",
                "trauma-informed": "trauma-informed care"}


def _quantity(comparator: str, value: int, unit: str) -> dict[str, Any]:
    return {"value": value, "comparator": comparator, "unit": unit, "system": UCUM, "code": unit}


GOAL_RULES = (
    GoalRule("depression", "Reduce depressive symptoms: PHQ-9 total score below 10 by week 8",
             _code(codes.LOINC, codes.PHQ9_TOTAL, "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]"),
             _quantity("<", 10, "{score}"), codes.PHQ9_TOTAL),
    GoalRule("anxiety", "Reduce anxiety symptoms: GAD-7 total score below 10 by week 8",
             _code(codes.LOINC, codes.GAD7_TOTAL, "Generalized anxiety disorder 7 item (GAD-7) total score"),
             _quantity("<", 10, "{score}"), codes.GAD7_TOTAL),
    GoalRule("abstinence", "Stay abstinent from alcohol and drugs for at least 28 consecutive days by week 8",
             _code(IOP_MEASURE, "days-abstinent", "Consecutive days abstinent"), _quantity(">=", 28, "d")),
    GoalRule("attendance", "Attend at least 80 % of scheduled sessions",
             _code(IOP_MEASURE, "attendance-rate", "Attendance rate of scheduled sessions"), _quantity(">=", 80, "%")),
)


def goal_applies(key: str, assessment: Assessment) -> bool:
    return {"depression": assessment.depressive_symptoms, "anxiety": assessment.anxiety_symptoms,
            "abstinence": assessment.substance_use, "attendance": True}[key]


def draft_plan(assessment: Assessment, start: date, ids: PlanIds) -> DraftPlan:
    """EpisodeOfCare (ASAM 2.1), an active CarePlan of 8 weeks and its Goals for one IOP admission."""
    if not is_iop_admission(assessment):
        raise NotAnIopAdmission(f"disposition {assessment.disposition!r} at level {assessment.level!r} "
                                f"(safety alert: {assessment.safety_alert}) is not an IOP admission")
    end = start + timedelta(weeks=PROGRAM_WEEKS, days=-1)  # 8 whole weeks; a FHIR Period end is inclusive
    goals = {r.key: _goal(r, assessment, start, end, ids) for r in GOAL_RULES if goal_applies(r.key, assessment)}
    careplan = _careplan(assessment, start, end, ids, goals)
    return DraftPlan(_episode(assessment, start, ids), careplan, list(goals.values()))


def _goal(rule: GoalRule, assessment: Assessment, start: date, due: date, ids: PlanIds) -> dict[str, Any]:
    if rule.key not in ids.goals:
        raise ValueError(f"PlanIds has no id for the {rule.key!r} goal")
    goal = {"resourceType": "Goal", "id": ids.goals[rule.key], "meta": labelled(uscore.GOAL),
            "lifecycleStatus": "active",
            "achievementStatus": {"coding": [_code(codes.GOAL_ACHIEVEMENT, "in-progress", "In Progress")]},
            "category": [{"coding": [_code(GOAL_CATEGORY, "behavioral", "Behavioral")]}],
            "description": {"text": rule.text}, "subject": {"reference": f"Patient/{assessment.patient_id}"},
            "startDate": start.isoformat(), "target": [{"measure": {"coding": [dict(rule.measure)]},
                                                        "detailQuantity": dict(rule.target),
                                                        "dueDate": due.isoformat()}]}
    if rule.baseline_code in assessment.scores:
        goal["extension"] = [{"url": GOAL_BASELINE, "valueInteger": assessment.scores[rule.baseline_code]}]
    return uscore.narrate(goal)


def skill_modules(assessment: Assessment) -> list[str]:
    """Psychoeducation modules the findings call for, coping skills always first."""
    wanted = {"coping-skills": True,
              "relapse-prevention": assessment.substance_use,
              "mindfulness": assessment.depressive_symptoms or assessment.anxiety_symptoms,
              "communication": assessment.family_involvement,
              "life-skills": assessment.drug_use_level in ("substantial", "severe"),
              "trauma-informed": assessment.trauma_positive}
    return [module for module, chosen in wanted.items() if chosen]


def program_days(preferred: list[str]) -> list[str]:
    """Three program days: the patient's preferred days (Mon/Wed/Fri first), topped up from Mon/Wed/Fri/Tue/Thu."""
    ranked = sorted(set(preferred) & set(WEEK_DAYS), key=lambda d: (d not in DEFAULT_DAYS, WEEK_DAYS.index(d)))
    days = ranked[:3] + [d for d in _TOP_UP_DAYS if d not in ranked][: max(0, 3 - len(ranked))]
    return sorted(days, key=WEEK_DAYS.index)


def weekly_hours(careplan: dict[str, Any]) -> float:
    """Scheduled hours per week over the activities still in progress or to come."""
    return round(sum(_activity_hours(a) for a in careplan.get("activity", [])
                     if a.get("detail", {}).get("status") in COUNTED_STATUSES), 4)


def intensity_issues(careplan: dict[str, Any]) -> list[Issue]:
    """An IOP plan must keep ASAM 2.1 intensity, e.g. after a clinician's revision drops or adds services."""
    hours = weekly_hours(careplan)
    if MIN_WEEKLY_HOURS <= hours <= MAX_WEEKLY_HOURS:
        return []
    return [Issue(f"the plan schedules {hours:g} hours a week; IOP (ASAM 2.1) needs {MIN_WEEKLY_HOURS:g} to "
                  f"{MAX_WEEKLY_HOURS:g}", "business-rule", expression="CarePlan.activity")]


def _activity_hours(activity: dict[str, Any]) -> float:
    repeat = activity.get("detail", {}).get("scheduledTiming", {}).get("repeat", {})
    period = repeat.get("period", 1) * _WEEKS_PER_UNIT[repeat.get("periodUnit", "wk")]
    per_week = repeat.get("frequency", 1) / period if period else 0.0  # FHIR lets a period be 0
    return per_week * repeat.get("duration", 0) * _HOURS_PER_UNIT[repeat.get("durationUnit", "h")]


def _services(assessment: Assessment) -> list[Service]:
    services = [GROUP, INDIVIDUAL] + ([FAMILY] if assessment.family_involvement else [])
    return services + [_module_service(m, assessment) for m in skill_modules(assessment)]


def _module_service(module: str, assessment: Assessment) -> Service:
    codings = [_PSYCHOEDUCATION, _code(SKILL_MODULE, module, _MODULE_TEXT[module].capitalize())]
    if module == "relapse-prevention":  # the only modules with a SNOMED code in DOMAIN.md 3.1
        if assessment.alcohol_use_positive:
            codings.append(_code(codes.SNOMED, "720176005", "Alcohol relapse prevention program"))
        if assessment.drug_use_positive:
            codings.append(_code(codes.SNOMED, "720177001", "Drug relapse prevention program"))
    return Service(module, f"Psychoeducation: {_MODULE_TEXT[module]}", tuple(codings), 1.0, "13:00:00",
                   _MODULE_GOALS[module])


def _activities(assessment: Assessment, start: date, end: date, goal_refs: dict[str, dict]) -> list[dict[str, Any]]:
    days = program_days(assessment.preferred_days or list(DEFAULT_DAYS))
    activities, slot = [], 0
    for service in _services(assessment):
        if service.key in _SERVICE_DAYS:
            service_days, time = days[_SERVICE_DAYS[service.key]], service.time_of_day
        else:  # modules rotate over the program days, a second round an hour later
            service_days, time = [days[slot % 3]], f"{13 + slot // 3}:00:00"
            slot += 1
        activities.append(_activity(service, service_days, time, start, end, goal_refs))
    return activities


def _activity(service: Service, days: list[str], time: str, start: date, end: date,
              goal_refs: dict[str, dict]) -> dict[str, Any]:
    refs = [goal_refs[k] for k in (*service.goals, "attendance") if k in goal_refs]
    timing = {"boundsPeriod": {"start": start.isoformat(), "end": end.isoformat()}, "frequency": len(days),
              "period": 1, "periodUnit": "wk", "dayOfWeek": days, "timeOfDay": [time],
              "duration": service.hours, "durationUnit": "h"}
    return {"detail": {"kind": "ServiceRequest", "code": {"coding": [dict(c) for c in service.codings],
                       "text": service.text}, "status": "scheduled", "scheduledTiming": {"repeat": timing},
                       "goal": refs}}


def _careplan(assessment: Assessment, start: date, end: date, ids: PlanIds, goals: dict[str, dict]) -> dict[str, Any]:
    goal_refs = {k: {"reference": f"Goal/{g['id']}", "display": g["description"]["text"]} for k, g in goals.items()}
    careplan = {
        "resourceType": "CarePlan", "id": ids.careplan, "meta": labelled(uscore.CAREPLAN),
        "identifier": [_source_identifier(assessment)], "status": "active", "intent": "plan",
        "category": [{"coding": [_code(codes.CAREPLAN_CATEGORY_US_CORE, "assess-plan",
                                       "Assessment and Plan of Treatment")]},
                     {"coding": [_code(codes.SNOMED, "718347000", "Mental health care plan (record artifact)")]},
                     {"coding": [_code(codes.IOP_CAREPLAN, "iop-treatment-plan", "IOP treatment plan")]}],
        "title": "IOP treatment plan (ASAM 2.1)", "subject": {"reference": f"Patient/{assessment.patient_id}"},
        "period": {"start": start.isoformat(), "end": end.isoformat()},
        "goal": list(goal_refs.values()), "activity": _activities(assessment, start, end, goal_refs)}
    careplan["text"] = narrative(careplan)
    return careplan


def _episode(assessment: Assessment, start: date, ids: PlanIds) -> dict[str, Any]:
    # Coding.version carries the ASAM edition: DOMAIN.md 2.1 asks to store it with the level.
    level = {**_code(codes.ASAM_LEVEL, "2.1", "Intensive outpatient (IOP)"), "version": codes.ASAM_EDITION}
    return {"resourceType": "EpisodeOfCare", "id": ids.episode, "meta": labelled(),
            "identifier": [_source_identifier(assessment)], "status": "active", "type": [{"coding": [level]}],
            "patient": {"reference": f"Patient/{assessment.patient_id}"}, "period": {"start": start.isoformat()}}


def _source_identifier(assessment: Assessment) -> dict[str, str]:
    """The intake that opened the episode: lets the store answer a conditional create for a redelivered event."""
    return {"system": f"{codes.IOP_IDENTIFIER}/intake-assessment", "value": assessment.questionnaire_response_id}


def labelled(profile: str | None = None) -> dict[str, Any]:
    """The Part 2 labels, and the US Core profile the resource claims if it has one."""
    return {"security": copy.deepcopy(codes.PART2_LABELS), **({"profile": [profile]} if profile else {})}


def narrative(careplan: dict[str, Any]) -> dict[str, str]:
    """A generated summary of the plan: services, days, hours and goal targets; never the patient's identity."""
    period = careplan.get("period", {})
    rows = [_activity_row(a.get("detail") or {}, a.get("reference") or {}) for a in careplan.get("activity", [])]
    goals = [f"<li>{escape(g.get('display', ''))}</li>" for g in careplan.get("goal", [])]
    div = (f"<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>{escape(careplan.get('title', 'Care plan'))}: "
           f"{careplan['status']}, {period.get('start', '?')} to {period.get('end', '?')}, "
           f"{weekly_hours(careplan):g} hours a week.</p><ul>{''.join(rows)}</ul>"
           f"<p>Goals</p><ul>{''.join(goals)}</ul></div>")
    return {"status": "generated", "div": div}


def _activity_row(detail: dict[str, Any], reference: dict[str, Any]) -> str:
    """One activity of any valid CarePlan: detailed (ours), or a reference to a request made elsewhere."""
    code = detail.get("code") or {}
    name = code.get("text") or next((c.get("display") for c in code.get("coding", []) if c.get("display")), None)
    if not detail:
        return f"<li>{escape(reference.get('display') or 'A planned activity')}</li>"
    return (f"<li>{escape(name or 'An activity')}: {_timing_text(detail)} "
            f"({escape(detail.get('status', 'status unknown'))})</li>")


def _timing_text(detail: dict[str, Any]) -> str:
    repeat = detail.get("scheduledTiming", {}).get("repeat", {})
    days = ", ".join(repeat.get("dayOfWeek", []))
    hours = f"{repeat['duration']:g} {repeat.get('durationUnit', 'h')}" if "duration" in repeat else "duration to agree"
    return f"{repeat.get('frequency', 1)} a week on {days or 'days to agree'}, {hours}"
