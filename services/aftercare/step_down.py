"""Step-down from IOP to aftercare (DOMAIN.md 6.3), as FHIR R4 JSON built from the graduated IOP plan.

Yields an aftercare CarePlan that replaces the IOP plan, relapse-prevention Goals, outbound referral
ServiceRequests and the check-in schedule. Ids come from the caller, so a redelivered graduation
event rebuilds identical resources instead of new ones.
"""
from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass
from datetime import date, timedelta

from services.aftercare.checkins import DEFAULT_WEEKS, DEFAULT_WINDOW_DAYS, CheckIn, checkin_schedule
from shared import codes
from shared.fhir import uscore
from shared.fhir.util import ref

ASSESS_PLAN = {"system": codes.CAREPLAN_CATEGORY_US_CORE, "code": "assess-plan",
               "display": "Assessment and Plan of Treatment"}
AFTERCARE_PLAN = {"system": codes.IOP_CAREPLAN, "code": "aftercare-step-down", "display": "Aftercare step-down plan"}
COUNSELING = {"system": codes.SNOMED, "code": "409063005", "display": "Counseling"}
GOAL_CATEGORY = "http://terminology.hl7.org/CodeSystem/goal-category"
GOAL_RELATIONSHIP = "http://hl7.org/fhir/StructureDefinition/goal-relationship"
GOAL_RELATIONSHIP_TYPE = "http://terminology.hl7.org/CodeSystem/goal-relationship-type"
SUPPORT_GROUP_TYPES = {"552": "Drug and/or Alcohol Support Groups", "224": "Support Groups"}

# A mention is enough: a false positive adds a referral a clinician can cancel, a false negative drops one.
MEDICATION_WORDS = re.compile(
    r"\b(medications?|moud|buprenorphine|naltrexone|methadone|acamprosate|disulfiram|pharmacotherapy|"
    r"antidepressants?|medication-assisted)\b", re.IGNORECASE)
RELAPSE_PREVENTION_GOALS = (
    ("no-return-to-use", "Sustain recovery: no return to substance use during aftercare"),
    ("relapse-plan", "Use the relapse-prevention plan: recognise triggers and warning signs, use coping skills, "
                     "reach out to supports"),
    ("engagement", "Stay engaged in aftercare: weekly outpatient therapy, support group, and every check-in"),
)
CLOSED_GOAL_STATES = {"cancelled", "entered-in-error", "rejected"}
NOT_CARRIED = {"achieved", "not-attainable"}


@dataclass(frozen=True)
class StepDownOptions:
    weeks: int = 12
    checkin_weeks: tuple[int, ...] = DEFAULT_WEEKS
    checkin_window_days: int = DEFAULT_WINDOW_DAYS
    therapy_cpt: str = "90834"          # 45-minute psychotherapy; 90837 for 60 minutes
    support_service_type: str = "552"   # 552 drug/alcohol support groups; 224 support groups (mental health only)


@dataclass(frozen=True)
class StepDownIds:
    careplan: str
    therapy_referral: str
    support_referral: str
    medication_referral: str
    goal_prefix: str

    @classmethod
    def derived(cls, base: str) -> StepDownIds:
        """Ids from one stable key, e.g. the graduated plan's id; FHIR ids are at most 64 characters."""
        if not re.fullmatch(r"[A-Za-z0-9\-.]{1,40}", base):
            raise ValueError("base must be a FHIR id of at most 40 characters")
        return cls(f"{base}-aftercare", f"{base}-ref-therapy", f"{base}-ref-support", f"{base}-ref-medication",
                   f"{base}-ag")

    def goal(self, key: str) -> str:
        goal_id = f"{self.goal_prefix}-{key}"
        if len(goal_id) <= 64:
            return goal_id
        return f"{self.goal_prefix}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"  # stable, still unique


@dataclass(frozen=True)
class StepDownPlan:
    careplan: dict
    goals: list[dict]
    referrals: list[dict]
    checkins: list[CheckIn]

    def resources(self) -> list[dict]:
        """The CarePlan first (the focus of iop.aftercare.planned), then what a consumer needs with it."""
        return [self.careplan, *self.goals, *self.referrals]


def step_down_plan(graduated_careplan: dict, goals: list[dict], ids: StepDownIds, graduation_date: date,
                   options: StepDownOptions = StepDownOptions()) -> StepDownPlan:
    subject = graduated_careplan.get("subject")
    if not subject:
        raise ValueError("the graduated CarePlan has no subject")
    end = graduation_date + timedelta(weeks=options.weeks)
    period = {"start": graduation_date.isoformat(), "end": end.isoformat()}
    aftercare_goals = relapse_prevention_goals(subject, goals, ids, period)
    referrals = referral_requests(graduated_careplan, goals, ids, period, options)
    checkins = checkin_schedule(graduation_date, options.checkin_weeks, options.checkin_window_days)
    plan = _careplan(graduated_careplan, ids.careplan, period, aftercare_goals, referrals, checkins)
    return StepDownPlan(plan, aftercare_goals, referrals, checkins)


def indicates_medication(careplan: dict, goals: list[dict]) -> bool:
    """Whether the IOP plan involved medication: a medication activity, or any text that mentions one."""
    for activity in careplan.get("activity", []):
        detail = activity.get("detail", {})
        target = activity.get("reference", {}).get("reference", "")
        if detail.get("kind") == "MedicationRequest" or "productCodeableConcept" in detail \
                or "productReference" in detail or target.startswith(("MedicationRequest/", "MedicationStatement/")):
            return True
    return any(MEDICATION_WORDS.search(text) for text in _texts([careplan, *goals]))


def relapse_prevention_goals(subject: dict, iop_goals: list[dict], ids: StepDownIds, period: dict) -> list[dict]:
    """Standard relapse-prevention goals, plus each IOP goal still worth pursuing carried forward."""
    standard = [_goal(ids.goal(key), subject, {"text": text}, period) for key, text in RELAPSE_PREVENTION_GOALS]
    carried = [_carried_goal(g, subject, ids, period) for g in sorted(iop_goals, key=lambda g: g.get("id", ""))
               if _worth_carrying(g)]
    return standard + carried


def referral_requests(careplan: dict, goals: list[dict], ids: StepDownIds, period: dict,
                      options: StepDownOptions) -> list[dict]:
    therapy = {"coding": [{"system": codes.CPT, "code": options.therapy_cpt},
                          {"system": codes.SNOMED, "code": "18512000", "display": "Individual psychotherapy"}],
               "text": "Standard outpatient therapy (ASAM level 1)"}
    asam_1 = {"coding": [{"system": codes.ASAM_LEVEL, "code": "1", "display": "Outpatient"}],
              "text": f"ASAM level 1 (edition {codes.ASAM_EDITION})"}
    support = {"coding": [{"system": codes.HCPCS, "code": "H0038",
                           "display": "Self-help/peer services, per 15 minutes"}],
               "text": "Support group / peer recovery support"}
    group_type = options.support_service_type
    group_detail = {"coding": [{"system": codes.SERVICE_TYPE, "code": group_type,
                                "display": SUPPORT_GROUP_TYPES.get(group_type, "")}]}
    weekly = {"frequency": 1, "period": 1, "periodUnit": "wk"}
    common = (careplan, ids.careplan, period)
    referrals = [_referral(ids.therapy_referral, therapy, [asam_1], weekly, *common),
                 _referral(ids.support_referral, support, [group_detail], weekly, *common)]
    if indicates_medication(careplan, goals):
        medication = {"coding": [{"system": codes.SNOMED, "code": "395170001",
                                  "display": "Medication monitoring (regime/therapy)"}], "text": "Medication follow-up"}
        monthly = {"frequency": 1, "period": 1, "periodUnit": "mo"}
        referrals.append(_referral(ids.medication_referral, medication, [], monthly, *common))
    return referrals


def _careplan(iop: dict, plan_id: str, period: dict, goals: list[dict], referrals: list[dict],
              checkins: list[CheckIn]) -> dict:
    plan = {"resourceType": "CarePlan", "id": plan_id, "meta": _meta(uscore.CAREPLAN),
            "text": _narrative(period, referrals, checkins),
            "status": "active", "intent": "plan", "category": [{"coding": [ASSESS_PLAN]}, {"coding": [AFTERCARE_PLAN]}],
            "title": "Aftercare step-down plan", "subject": iop["subject"],
            "basedOn": [ref("CarePlan", iop["id"])], "replaces": [ref("CarePlan", iop["id"])], "period": period,
            "goal": [ref("Goal", g["id"]) for g in goals],
            "activity": [{"reference": ref("ServiceRequest", r["id"])} for r in referrals]}
    plan["activity"].append(_checkin_activity(checkins, goals))
    for key in ("addresses", "careTeam"):
        if iop.get(key):
            plan[key] = copy.deepcopy(iop[key])
    return plan


def _checkin_activity(checkins: list[CheckIn], goals: list[dict]) -> dict:
    window = checkins[0].window_days if checkins else DEFAULT_WINDOW_DAYS
    return {"detail": {
        "kind": "Appointment", "status": "scheduled",
        "code": {"coding": [{"system": codes.SNOMED, "code": "390906007", "display": "Follow-up encounter"}],
                 "text": "Aftercare check-in"},
        "description": f"Aftercare check-ins; each counts within {window} days of its date",
        "scheduledTiming": {"event": [c.due.isoformat() for c in checkins]},
        "goal": [ref("Goal", g["id"]) for g in goals]}}


def _referral(rid: str, code: dict, detail: list[dict], repeat: dict, iop: dict, plan_id: str, period: dict) -> dict:
    request = {"resourceType": "ServiceRequest", "id": rid, "meta": _meta(uscore.SERVICE_REQUEST),
               "status": "active", "intent": "order",
               "category": [{"coding": [COUNSELING]}], "code": code, "subject": iop["subject"],
               "basedOn": [ref("CarePlan", plan_id)], "authoredOn": period["start"],
               "occurrenceTiming": {"repeat": {"boundsPeriod": period, **repeat}}}
    if detail:
        request["orderDetail"] = detail
    if iop.get("author"):
        request["requester"] = copy.deepcopy(iop["author"])  # the IOP plan's author orders the step-down
    return uscore.narrate(request)


def _goal(goal_id: str, subject: dict, description: dict, period: dict, achievement: str = "in-progress") -> dict:
    return uscore.narrate({
        "resourceType": "Goal", "id": goal_id, "meta": _meta(uscore.GOAL), "lifecycleStatus": "active",
        "achievementStatus": {"coding": [{"system": codes.GOAL_ACHIEVEMENT, "code": achievement}]},
        "category": [{"coding": [{"system": GOAL_CATEGORY, "code": "behavioral", "display": "Behavioral"}]}],
        "description": copy.deepcopy(description), "subject": subject, "startDate": period["start"],
        "target": [{"dueDate": period["end"]}]})


def _carried_goal(iop_goal: dict, subject: dict, ids: StepDownIds, period: dict) -> dict:
    """A new aftercare Goal continuing an IOP goal, linked to it as its predecessor."""
    achievement = _achievement(iop_goal) or "in-progress"
    goal = _goal(ids.goal(f"c-{iop_goal['id']}"), subject, iop_goal.get("description", {"text": "IOP goal"}),
                 period, achievement)
    targets = [{k: v for k, v in t.items() if not k.startswith("due")} for t in iop_goal.get("target", [])]
    goal["target"] = [{**copy.deepcopy(t), "dueDate": period["end"]} for t in targets] or goal["target"]
    predecessor = {"coding": [{"system": GOAL_RELATIONSHIP_TYPE, "code": "predecessor"}]}
    goal["extension"] = [{"url": GOAL_RELATIONSHIP, "extension": [
        {"url": "type", "valueCodeableConcept": predecessor},
        {"url": "target", "valueReference": ref("Goal", iop_goal["id"])}]}]
    return uscore.narrate(goal)


def _worth_carrying(goal: dict) -> bool:
    """Achieved goals are done; cancelled or unattainable ones are not aftercare's to pursue."""
    return bool(goal.get("id")) and goal.get("lifecycleStatus") not in CLOSED_GOAL_STATES \
        and _achievement(goal) not in NOT_CARRIED


def _achievement(goal: dict) -> str | None:
    codings = goal.get("achievementStatus", {}).get("coding", [])
    return next((c.get("code") for c in codings if c.get("system") == codes.GOAL_ACHIEVEMENT), None)


def _texts(node: object):
    """Every human-readable string (text, display, description) outside meta."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("text", "display", "description", "div") and isinstance(value, str):
                yield value
            elif key != "meta":
                yield from _texts(value)
    elif isinstance(node, list):
        for item in node:
            yield from _texts(item)


def _narrative(period: dict, referrals: list[dict], checkins: list[CheckIn]) -> dict:
    services = "; ".join(r["code"]["text"] for r in referrals)
    dates = ", ".join(c.due.isoformat() for c in checkins)
    body = f"Aftercare from {period['start']} to {period['end']}. Referrals: {services}. Check-ins: {dates}."
    return uscore.div(body)


def _meta(profile: str) -> dict:
    return {"security": copy.deepcopy(codes.PART2_LABELS), "profile": [profile]}
