"""Progress monitoring: sessions and re-assessment scores update the plan (docs/careplan-rules.md, "Progress").

Where progress lives on the CarePlan: each activity's `outcomeReference` lists the Encounters applied to it, each
tagged with its session outcome and date (extension session-outcome). That list is the single source of truth: the
counts (extension session-attendance on each activity and on the CarePlan) are recomputed from it, and it is the
record of applied encounter ids that makes a redelivered Encounter change nothing.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from services.careplan.assessment import WEEK_DAYS
from services.careplan.plan_rules import COUNTED_STATUSES, GOAL_BASELINE, UCUM, narrative
from shared import codes
from shared.fhir.util import ref_id

SESSION_OUTCOME = "https://iop-suite.org/fhir/StructureDefinition/session-outcome"
SESSION_ATTENDANCE = "https://iop-suite.org/fhir/StructureDefinition/session-attendance"
# The Encounter as the encounters service writes it (services/encounters/workflow.py and sessions.py).
REASON_CANCELLED = "http://hl7.org/fhir/StructureDefinition/encounter-reasonCancelled"
CANCELLATION_REASON = f"{codes.CODE_BASE}/session-cancellation-reason"
CAREPLAN_ACTIVITY = f"{codes.IOP_IDENTIFIER}/careplan-activity"
ATTENDED, MISSED, EXCUSED, REMOVED = "attended", "missed", "excused", "removed"
MISSED_STREAK_LIMIT = 2
RESPONSE_DROP = 0.5     # a >= 50 % drop from baseline is a response (HEDIS DRR-E, DOMAIN.md 3.4)
WORSENING_POINTS = 5    # a rise of >= 5 points from baseline is a clinically meaningful worsening (local policy)
ACHIEVEMENT_DISPLAY = {"in-progress": "In Progress", "improving": "Improving", "worsening": "Worsening",
                       "no-change": "No Change", "achieved": "Achieved", "sustaining": "Sustaining",
                       "not-achieved": "Not Achieved"}


@dataclass(frozen=True)
class SessionOutcome:
    """What careplan needs from one Encounter: which activity it belongs to and how it ended."""

    encounter_id: str
    status: str                                    # Encounter.status
    session_date: str = ""                         # Encounter.period.start, orders the missed streak
    careplan_id: str | None = None                 # from Encounter.basedOn (careplan-activity identifier)
    activity_index: int | None = None
    codes: frozenset[tuple[str, str]] = frozenset()  # (system, code) of Encounter.type
    no_show: bool = False

    @property
    def outcome(self) -> str | None:
        """attended / missed (no-show) / excused (cancelled for another reason); None while still under way."""
        return {"finished": ATTENDED, "cancelled": MISSED if self.no_show else EXCUSED,
                "entered-in-error": REMOVED}.get(self.status)


@dataclass(frozen=True)
class AdjustmentSignal:
    """A reason for the care team to revisit the plan; no clinical change is made automatically."""

    kind: str    # "missed-sessions" | "worsening-score"
    reason: str
    focus: str   # "CarePlan/<id>" or "Goal/<id>"


def session_outcome(encounter: dict[str, Any]) -> SessionOutcome:
    """Read an Encounter from `iop.encounter.*`; its id is what makes applying it twice harmless."""
    if not encounter.get("id"):
        raise ValueError("an Encounter without an id cannot be counted toward the plan")
    based_on = next((r["identifier"] for r in encounter.get("basedOn", [])
                     if r.get("identifier", {}).get("system") == CAREPLAN_ACTIVITY), None)
    careplan_id, _, index = (based_on or {}).get("value", "").rpartition("/")
    reason = next((e.get("valueCodeableConcept", {}) for e in encounter.get("extension", [])
                   if e.get("url") == REASON_CANCELLED), {})
    return SessionOutcome(
        encounter["id"], encounter.get("status", ""), encounter.get("period", {}).get("start", ""),
        careplan_id or None, int(index) if index.isascii() and index.isdigit() else None,  # not '²', not '-1'
        frozenset(pair for concept in encounter.get("type", []) for pair in _pairs(concept)),
        any(c.get("system") == CANCELLATION_REASON and c.get("code") == "no-show" for c in reason.get("coding", [])))


def apply_session_outcome(careplan: dict[str, Any], session: SessionOutcome) -> tuple[dict[str, Any],
                                                                                     list[AdjustmentSignal]]:
    """The CarePlan with the session counted (a new dict), and any signal it raises; unchanged when already applied."""
    outcome, applied = session.outcome, _applied(careplan, session.encounter_id)
    if careplan.get("status") != "active" or outcome is None or (applied and applied[1] == outcome):
        return careplan, []
    index = applied[0] if applied else _match_activity(careplan, session)
    if index is None or (outcome == REMOVED and not applied):
        return careplan, []
    updated = copy.deepcopy(careplan)
    activity = updated["activity"][index]
    refs = [r for r in activity.get("outcomeReference", []) if ref_id(r) != session.encounter_id]
    if outcome != REMOVED:
        refs.append(_outcome_reference(session, outcome))
    activity["outcomeReference"] = refs
    if not refs:  # FHIR JSON has no empty arrays
        del activity["outcomeReference"]
    _recount(updated)
    return updated, _streak_signals(careplan, updated, outcome)


def attendance_rate(careplan: dict[str, Any]) -> float | None:
    """Attended / (attended + missed) over the sessions held so far; None before the first one."""
    attended, missed = _totals(careplan)
    return attended / (attended + missed) if attended + missed else None


def missed_streak(careplan: dict[str, Any]) -> int:
    """No-shows in a row at the end of the record, across all activities; excused sessions neither break nor add."""
    held = sorted((d, o) for a in careplan.get("activity", []) for d, o in _outcomes(a) if o in (ATTENDED, MISSED))
    streak = 0
    for _, outcome in reversed(held):
        if outcome != MISSED:
            break
        streak += 1
    return streak


def goal_achievement(baseline: int, latest: int, target: dict[str, Any]) -> str:
    """achieved / improving / worsening / no-change of one score against one Goal.target."""
    quantity = target.get("detailQuantity", {})
    comparator, value = quantity.get("comparator", "<="), quantity.get("value")
    if value is not None and _meets(latest, comparator, value):
        return "achieved"
    if comparator in (">", ">="):  # more is better, e.g. days abstinent
        return "improving" if latest > baseline else "worsening" if latest < baseline else "no-change"
    if latest - baseline >= WORSENING_POINTS:
        return "worsening"
    if baseline > 0 and (baseline - latest) / baseline >= RESPONSE_DROP:
        return "improving"
    return "no-change"


def update_goals(goals: list[dict[str, Any]], scores: dict[str, int]) -> tuple[list[dict[str, Any]],
                                                                               list[AdjustmentSignal]]:
    """The active Goals whose achievement the new scores change (copies), and a signal for each that worsened."""
    changed, signals = [], []
    for goal in goals:
        found = _scored_target(goal, scores)
        if goal.get("lifecycleStatus") != "active" or found is None:
            continue
        target, baseline, latest = found
        previous, status = achievement(goal), goal_achievement(baseline, latest, target)
        if status == "achieved" and previous in ("achieved", "sustaining"):
            status = "sustaining"  # achieved at an earlier check and still there
        if status != previous:
            changed.append(with_achievement(goal, status))
            if status == "worsening":
                signals.append(AdjustmentSignal("worsening-score", f"{_measure_name(target)} rose from {baseline} "
                                                f"at intake to {latest}", f"Goal/{goal.get('id', '')}"))
    return changed, signals


def achievement(goal: dict[str, Any]) -> str:
    return next((c["code"] for c in goal.get("achievementStatus", {}).get("coding", [])
                 if c.get("system") == codes.GOAL_ACHIEVEMENT), "in-progress")


def with_achievement(goal: dict[str, Any], status: str) -> dict[str, Any]:
    coding = {"system": codes.GOAL_ACHIEVEMENT, "code": status, "display": ACHIEVEMENT_DISPLAY[status]}
    return {**copy.deepcopy(goal), "achievementStatus": {"coding": [coding]}}


def _meets(latest: int, comparator: str, value: float) -> bool:
    return {"<": latest < value, "<=": latest <= value, ">=": latest >= value, ">": latest > value}[comparator]


def _scored_target(goal: dict[str, Any], scores: dict[str, int]) -> tuple[dict[str, Any], int, int] | None:
    baseline = next((e["valueInteger"] for e in goal.get("extension", []) if e.get("url") == GOAL_BASELINE), None)
    for target in goal.get("target", []):
        code = next((c.get("code") for c in target.get("measure", {}).get("coding", [])
                     if c.get("system") == codes.LOINC and c.get("code") in scores), None)
        if code and baseline is not None:
            return target, baseline, scores[code]
    return None


def _measure_name(target: dict[str, Any]) -> str:
    coding = target.get("measure", {}).get("coding", [{}])[0]
    return coding.get("display") or coding.get("code", "score")


def _applied(careplan: dict[str, Any], encounter_id: str) -> tuple[int, str] | None:
    for index, activity in enumerate(careplan.get("activity", [])):
        for ref in activity.get("outcomeReference", []):
            if ref_id(ref) == encounter_id:
                return index, _sub(ref, "outcome", "valueCode")
    return None


def _match_activity(careplan: dict[str, Any], session: SessionOutcome) -> int | None:
    """The activity named by Encounter.basedOn, else the live activity sharing most codes (earliest on a tie)."""
    activities = careplan.get("activity", [])
    if session.careplan_id not in (None, careplan.get("id")):
        return None
    if session.activity_index is not None:
        return session.activity_index if session.activity_index < len(activities) else None
    overlap = [(len(session.codes & _pairs(a["detail"].get("code", {}))), -i) for i, a in enumerate(activities)
               if a.get("detail", {}).get("status") in COUNTED_STATUSES]
    best = max(overlap, default=(0, 0))
    return -best[1] if best[0] else None


def _pairs(concept: dict[str, Any]) -> frozenset[tuple[str, str]]:
    return frozenset((c.get("system", ""), c.get("code", "")) for c in concept.get("coding", []))


def _outcome_reference(session: SessionOutcome, outcome: str) -> dict[str, Any]:
    parts = [{"url": "outcome", "valueCode": outcome}]
    if session.session_date:
        parts.append({"url": "date", "valueDateTime": session.session_date})
    return {"reference": f"Encounter/{session.encounter_id}", "extension": [{"url": SESSION_OUTCOME,
                                                                            "extension": parts}]}


def _sub(ref: dict[str, Any], part: str, key: str) -> str:
    outer = next((e for e in ref.get("extension", []) if e.get("url") == SESSION_OUTCOME), {})
    return next((p.get(key, "") for p in outer.get("extension", []) if p.get("url") == part), "")


def _outcomes(activity: dict[str, Any]) -> list[tuple[str, str]]:
    return [(_sub(r, "date", "valueDateTime"), _sub(r, "outcome", "valueCode"))
            for r in activity.get("outcomeReference", [])]


def _totals(careplan: dict[str, Any]) -> tuple[int, int]:
    outcomes = [o for a in careplan.get("activity", []) for _, o in _outcomes(a)]
    return outcomes.count(ATTENDED), outcomes.count(MISSED)


def _recount(careplan: dict[str, Any]) -> None:
    for activity in careplan.get("activity", []):
        outcomes = [o for _, o in _outcomes(activity)]
        _set_extension(activity, _counts(planned_count(activity), outcomes.count(ATTENDED), outcomes.count(MISSED)))
        if ATTENDED in outcomes and activity.get("detail", {}).get("status") in ("not-started", "scheduled"):
            activity["detail"]["status"] = "in-progress"
    attended, missed = _totals(careplan)
    counts = _counts(None, attended, missed)
    counts["extension"].append({"url": "missed-streak", "valueUnsignedInt": missed_streak(careplan)})
    if attended + missed:
        rate = round(100 * attended / (attended + missed), 1)
        counts["extension"].append({"url": "rate", "valueQuantity": {"value": rate, "unit": "%", "system": UCUM,
                                                                     "code": "%"}})
    _set_extension(careplan, counts)
    careplan["text"] = narrative(careplan)


def _counts(planned: int | None, attended: int, missed: int) -> dict[str, Any]:
    parts = [] if planned is None else [{"url": "planned", "valueUnsignedInt": planned}]
    parts += [{"url": "attended", "valueUnsignedInt": attended}, {"url": "missed", "valueUnsignedInt": missed}]
    return {"url": SESSION_ATTENDANCE, "extension": parts}


def _set_extension(element: dict[str, Any], extension: dict[str, Any]) -> None:
    others = [e for e in element.get("extension", []) if e.get("url") != extension["url"]]
    element["extension"] = [*others, extension]


def planned_count(activity: dict[str, Any]) -> int:
    """Sessions the activity's timing plans over its whole bounds period (dated days times times of day)."""
    repeat = activity.get("detail", {}).get("scheduledTiming", {}).get("repeat", {})
    bounds, days = repeat.get("boundsPeriod", {}), repeat.get("dayOfWeek", [])
    if not (days and bounds.get("start") and bounds.get("end")):
        return 0
    first, last = date.fromisoformat(bounds["start"][:10]), date.fromisoformat(bounds["end"][:10])
    dated = sum(1 for n in range((last - first).days + 1) if WEEK_DAYS[(first + timedelta(n)).weekday()] in days)
    return dated * max(1, len(repeat.get("timeOfDay", [])))


def _streak_signals(before: dict[str, Any], after: dict[str, Any], outcome: str) -> list[AdjustmentSignal]:
    streak = missed_streak(after)
    if outcome != MISSED or streak < MISSED_STREAK_LIMIT or streak <= missed_streak(before):
        return []
    return [AdjustmentSignal("missed-sessions", f"{streak} scheduled sessions missed in a row",
                             f"CarePlan/{after.get('id', '')}")]
