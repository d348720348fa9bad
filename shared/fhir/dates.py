"""FHIR date, dateTime and instant values as UTC ranges, for indexing and date search."""
from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$")


def _fmt(dt: datetime) -> str:
    u = dt.astimezone(UTC)
    return (f"{u.year:04d}-{u.month:02d}-{u.day:02d}"
            f"T{u.hour:02d}:{u.minute:02d}:{u.second:02d}.{u.microsecond // 1000:03d}Z")


def _zone(tz: str | None) -> tzinfo:
    """The zone of an ISO 8601 suffix: none or Z is UTC, else ±hh:mm (a ValueError when out of range)."""
    if tz in (None, "Z"):
        return UTC
    offset = timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
    return timezone(-offset if tz[0] == "-" else offset)


def date_range(value: str) -> tuple[str, str] | None:
    """The [low, high] UTC instants a (possibly partial) FHIR date covers; None if it is not a date."""
    m = _DATE.match(value.strip())
    if not m:
        return None
    year, month, day, hour, minute, second, frac, tz = m.groups()
    try:
        if month is None:
            lo, hi = datetime(int(year), 1, 1, tzinfo=UTC), datetime(int(year) + 1, 1, 1, tzinfo=UTC)
        elif day is None:
            y, mo = int(year), int(month)
            lo = datetime(y, mo, 1, tzinfo=UTC)
            hi = lo + timedelta(days=calendar.monthrange(y, mo)[1])
        elif hour is None:
            lo = datetime(int(year), int(month), int(day), tzinfo=UTC)
            hi = lo + timedelta(days=1)
        else:
            zone = _zone(tz)
            micro = int(round(float(frac or "0") * 1_000_000)) if frac else 0
            lo = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micro,
                          tzinfo=zone)
            hi = lo + (timedelta(seconds=1) if frac is None else timedelta(milliseconds=1))
    except ValueError:
        return None
    return _fmt(lo), _fmt(hi - timedelta(milliseconds=1))
