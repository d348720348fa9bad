"""Aftercare check-ins: the schedule after graduation, completing one, and noticing a missed one.

Pure functions over immutable CheckIn values; the store persists them with to_dict/from_dict.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta

DEFAULT_WEEKS = (1, 2, 4, 8, 12)
DEFAULT_WINDOW_DAYS = 3
STATUSES = ("due", "completed", "missed")


@dataclass(frozen=True)
class CheckIn:
    """One planned check-in. It counts if it happens within window_days either side of `due`."""

    due: date
    window_days: int = DEFAULT_WINDOW_DAYS
    status: str = "due"  # due | completed | missed
    completed_on: date | None = None

    @property
    def window_start(self) -> date:
        return self.due - timedelta(days=self.window_days)

    @property
    def window_end(self) -> date:
        return self.due + timedelta(days=self.window_days)

    def covers(self, day: date) -> bool:
        return self.window_start <= day <= self.window_end

    def to_dict(self) -> dict:
        done = self.completed_on.isoformat() if self.completed_on else None
        return {"due": self.due.isoformat(), "window_days": self.window_days, "status": self.status,
                "completed_on": done}

    @classmethod
    def from_dict(cls, data: dict) -> CheckIn:
        done = data.get("completed_on")
        return cls(date.fromisoformat(data["due"]), int(data.get("window_days", DEFAULT_WINDOW_DAYS)),
                   data.get("status", "due"), date.fromisoformat(done) if done else None)


def checkin_schedule(graduation: date, weeks: tuple[int, ...] = DEFAULT_WEEKS,
                     window_days: int = DEFAULT_WINDOW_DAYS) -> list[CheckIn]:
    """Check-ins due `weeks` after graduation, earliest first."""
    return [CheckIn(graduation + timedelta(weeks=w), window_days) for w in sorted(set(weeks))]


def complete_checkin(schedule: list[CheckIn], on: date) -> list[CheckIn]:
    """Record a check-in held on `on`: it completes the earliest due item whose window contains that day.

    A check-in outside every open window changes nothing (the caller can tell by comparing), because
    an unplanned contact must not silently close a later, still-future check-in.
    """
    ordered = sorted(schedule, key=lambda c: c.due)
    for i, item in enumerate(ordered):
        if item.status == "due" and item.covers(on):
            ordered[i] = replace(item, status="completed", completed_on=on)
            break
    return ordered


def missed_checkins(schedule: list[CheckIn], today: date) -> list[CheckIn]:
    """Items newly missed: still due although their window ended before today.

    Items already marked missed are not reported again, so a daily sweep that calls this and then
    mark_missed emits each iop.aftercare.checkin-missed event once.
    """
    return [c for c in sorted(schedule, key=lambda c: c.due) if c.status == "due" and c.window_end < today]


def mark_missed(schedule: list[CheckIn], today: date) -> list[CheckIn]:
    """The schedule with every newly missed item marked missed (idempotent)."""
    missed = set(missed_checkins(schedule, today))
    return [replace(c, status="missed") if c in missed else c for c in sorted(schedule, key=lambda c: c.due)]


def next_due(schedule: list[CheckIn], today: date) -> CheckIn | None:
    """The next check-in still to happen (its window has not ended), for reminders."""
    open_items = [c for c in schedule if c.status == "due" and c.window_end >= today]
    return min(open_items, key=lambda c: c.due, default=None)
