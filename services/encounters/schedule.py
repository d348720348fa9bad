"""Dated sessions from a CarePlan's activity timings, and reconciling them with the Encounters already planned.

Every session has a key, "<CarePlan id>/<activity index>/<billing code>/<date>T<HH:MM>", stored as the planned
Encounter's identifier (system .../planned-session). Regenerating a schedule therefore finds the same keys and creates
nothing twice; a changed activity code gives new keys, so its old sessions are cancelled and new ones created.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

from services.encounters.sessions import build_encounter, kind_of
from services.encounters.workflow import cancellation_reason
from shared import codes
from shared.fhir.util import ref_id

PLANNED_SESSION = f"{codes.IOP_IDENTIFIER}/planned-session"
WEEK_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_TIME = time(9, 0)                     # when an activity's timing gives no timeOfDay
LIVE_ACTIVITY = frozenset({"not-started", "scheduled", "in-progress"})  # the CarePlan activities still delivered
LIVE_SESSION = frozenset({"planned", "arrived", "in-progress", "finished"})
RECREATE_AFTER = "plan-changed"               # the only cancellation a later schedule may undo (by a new session)
_HOURS = {"min": 1 / 60, "h": 1.0}
_BILLING = (codes.CPT, codes.HCPCS)


@dataclass(frozen=True)
class PlannedSession:
    key: str
    careplan_id: str
    activity_index: int
    code: str                         # the activity's CPT/HCPCS code
    day: date
    time_of_day: time = DEFAULT_TIME  # local clock time at the program
    hours: float = 1.0
    encounter_id: str | None = None   # set for sessions that already have an Encounter
    status: str = "planned"           # that Encounter's status
    cancel_reason: str | None = None

    def start(self, tz: tzinfo) -> datetime:
        return datetime.combine(self.day, self.time_of_day, tz)


@dataclass
class Reconciliation:
    create: list[PlannedSession] = field(default_factory=list)
    cancel: list[PlannedSession] = field(default_factory=list)  # planned Encounters to cancel as "plan-changed"
    keep: list[PlannedSession] = field(default_factory=list)


def session_key(careplan_id: str, index: int, code: str, day: date, at: time) -> str:
    return f"{careplan_id}/{index}/{code}/{day.isoformat()}T{at:%H:%M}"


def planned_sessions(careplan: dict[str, Any], from_date: date, weeks: int) -> list[PlannedSession]:
    """The sessions an active CarePlan plans in [from_date, from_date + weeks), in date and time order."""
    if careplan.get("status") != "active":
        return []
    until = from_date + timedelta(weeks=weeks, days=-1)
    sessions = [s for index, activity in enumerate(careplan.get("activity", []))
                if activity.get("detail", {}).get("status") in LIVE_ACTIVITY
                for s in _activity_sessions(careplan["id"], index, activity["detail"], from_date, until)]
    return sorted(sessions, key=_when)


def reconcile(existing: list[PlannedSession], wanted: list[PlannedSession], *,
              window: tuple[date, date]) -> Reconciliation:
    """What to create and cancel so that each wanted key has one live Encounter inside window (inclusive).

    Sessions outside the window, and finished or under-way ones, are never touched; a session cancelled for the
    patient (no-show, patient-cancelled) or by the program is not replanned, only one cancelled as plan-changed is.
    """
    first, last = window
    present = [s for s in existing if first <= s.day <= last and s.status != "entered-in-error"]
    wanted_keys = {s.key for s in wanted if first <= s.day <= last}
    result = Reconciliation()
    for key in dict.fromkeys(s.key for s in sorted(present, key=_when)):  # chronological, each key once
        _reconcile_key(key, [s for s in present if s.key == key], key in wanted_keys, result)
    settled = {s.key for s in present if s.status in LIVE_SESSION or
               (s.status == "cancelled" and s.cancel_reason != RECREATE_AFTER)}
    result.create = list({s.key: s for s in wanted if s.key in wanted_keys - settled}.values())
    return result


def planned_encounter(careplan: dict[str, Any], session: PlannedSession, tz: tzinfo, *,
                      episode_id: str | None = None, virtual: bool = False) -> dict[str, Any]:
    """The planned Encounter for one session: the activity's own code as type, the key as identifier."""
    code = careplan["activity"][session.activity_index]["detail"]["code"]
    kind = kind_of(code.get("coding", []))
    if kind is None:
        raise ValueError(f"activity {session.activity_index} has no session kind's billing code")
    start = session.start(tz)
    encounter = build_encounter(kind, ref_id(careplan.get("subject")) or "", start=start,
                                end=start + timedelta(hours=session.hours), virtual=virtual, episode_id=episode_id,
                                activity=(session.careplan_id, session.activity_index), session_type=code)
    encounter["identifier"] = [{"system": PLANNED_SESSION, "value": session.key}]
    return encounter


def session_from_encounter(encounter: dict[str, Any]) -> PlannedSession | None:
    """The PlannedSession an Encounter records, or None for a session that no schedule planned."""
    key = next((i.get("value", "") for i in encounter.get("identifier", []) if i.get("system") == PLANNED_SESSION), "")
    try:
        careplan_id, index, code, moment = key.rsplit("/", 3)
        day, at = date.fromisoformat(moment[:10]), time.fromisoformat(moment[11:])
        hours = _period_hours(encounter.get("period", {}))
        return PlannedSession(key, careplan_id, int(index), code, day, at, hours, encounter.get("id"),
                              encounter.get("status", ""), cancellation_reason(encounter))
    except ValueError:
        return None


def _when(session: PlannedSession) -> tuple[date, time, int]:
    return session.day, session.time_of_day, session.activity_index


def _reconcile_key(key: str, sessions: list[PlannedSession], wanted: bool, result: Reconciliation) -> None:
    # Held or under-way sessions first: when a slot has two live Encounters, the planned duplicate is the one to go.
    live = sorted((s for s in sessions if s.status in LIVE_SESSION),
                  key=lambda s: (s.status == "planned", s.encounter_id or ""))
    for position, session in enumerate(live):
        if session.status != "planned" or (wanted and position == 0):
            result.keep.append(session)
        else:
            result.cancel.append(session)


def _activity_sessions(careplan_id: str, index: int, detail: dict[str, Any], first: date,
                       last: date) -> list[PlannedSession]:
    repeat = detail.get("scheduledTiming", {}).get("repeat", {})
    days, bounds = repeat.get("dayOfWeek", []), repeat.get("boundsPeriod", {})
    if not days:
        return []  # undated activities are booked by hand
    first = max(first, date.fromisoformat(bounds["start"][:10])) if bounds.get("start") else first
    last = min(last, date.fromisoformat(bounds["end"][:10])) if bounds.get("end") else last
    times = [time.fromisoformat(t) for t in repeat.get("timeOfDay", [])] or [DEFAULT_TIME]
    code, hours = _billing_code(detail), repeat.get("duration", 1) * _HOURS.get(repeat.get("durationUnit", "h"), 1)
    dates = [first + timedelta(n) for n in range((last - first).days + 1)]
    return [PlannedSession(session_key(careplan_id, index, code, d, t), careplan_id, index, code, d, t, hours)
            for d in dates if WEEK_DAYS[d.weekday()] in days for t in times]


def _billing_code(detail: dict[str, Any]) -> str:
    codings = detail.get("code", {}).get("coding", [])
    billing = next((c for c in codings if c.get("system") in _BILLING), codings[0] if codings else {})
    return billing.get("code", "activity")


def _period_hours(period: dict[str, Any]) -> float:
    if not (period.get("start") and period.get("end")):
        return 1.0
    try:
        span = datetime.fromisoformat(period["end"]) - datetime.fromisoformat(period["start"])
    except TypeError:  # one end with a zone, the other without: the length is unknown, not an error
        return 1.0
    return span.total_seconds() / 3600
