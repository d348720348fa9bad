"""FHIR date, dateTime and instant values as UTC ranges, for indexing and date search.

Valid FHIR values reach past what Python's datetime holds once moved to UTC: 9999-12-31T23:59:59-14:00
is in the year 10000, 0001-01-01T00:00:00+14:00 in the year 0. Ranges are computed in milliseconds and
clamped to 0001-01-01T00:00:00.000Z .. 9999-12-31T23:59:59.999Z, which still orders every value
correctly against everything the index holds.
"""
from __future__ import annotations

import calendar
import re
from datetime import date, datetime, timedelta

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$",
                   re.ASCII)
_DAY_MS = 86_400_000
_EPOCH = datetime(1, 1, 1)
_FIRST_MS = 0                                                          # 0001-01-01T00:00:00.000Z
_LAST_MS = (date(9999, 12, 31).toordinal() - 1) * _DAY_MS + _DAY_MS - 1  # 9999-12-31T23:59:59.999Z
_MAX_OFFSET_MIN = 14 * 60  # ISO 8601 and FHIR zones run from -14:00 to +14:00


def _fmt(ms: int) -> str:
    u = _EPOCH + timedelta(milliseconds=min(max(ms, _FIRST_MS), _LAST_MS))
    return (f"{u.year:04d}-{u.month:02d}-{u.day:02d}"
            f"T{u.hour:02d}:{u.minute:02d}:{u.second:02d}.{u.microsecond // 1000:03d}Z")


def _offset_minutes(tz: str | None) -> int:
    """The zone of an ISO 8601 suffix in minutes east of UTC: none or Z is UTC (a ValueError when out of range)."""
    if tz in (None, "Z"):
        return 0
    hours, minutes = int(tz[1:3]), int(tz[4:6])
    if minutes > 59 or hours * 60 + minutes > _MAX_OFFSET_MIN:
        raise ValueError("zone offset out of range")
    return -(hours * 60 + minutes) if tz[0] == "-" else hours * 60 + minutes


def _day_ms(year: int, month: int, day: int) -> int:
    return (date(year, month, day).toordinal() - 1) * _DAY_MS  # date() raises ValueError for a day that is not


def _span(year: str, month: str | None, day: str | None, hour: str | None, frac: str | None) -> tuple[int, int]:
    """The local start of a value, in ms from 0001-01-01, and how many ms its precision covers."""
    y = int(year)
    if y < 1:
        raise ValueError("year 0000")
    if month is None:
        return _day_ms(y, 1, 1), (366 if calendar.isleap(y) else 365) * _DAY_MS
    m = int(month)
    if day is None:
        return _day_ms(y, m, 1), calendar.monthrange(y, m)[1] * _DAY_MS  # _day_ms refuses month 13 first
    start = _day_ms(y, m, int(day))
    return start, _DAY_MS if hour is None else (1 if frac else 1000)


def date_range(value: str) -> tuple[str, str] | None:
    """The [low, high] UTC instants a (possibly partial) FHIR date covers; None if it is not a date."""
    m = _DATE.match(value.strip()) if isinstance(value, str) else None
    if not m:
        return None
    year, month, day, hour, minute, second, frac, tz = m.groups()
    try:
        start, span = _span(year, month, day, hour, frac)
        if hour is not None:
            h, mi, s = int(hour), int(minute), int(second or 0)
            if h > 23 or mi > 59 or s > 60:  # 60: a leap second, which FHIR allows
                raise ValueError("time out of range")
            millis = int(frac[1:4].ljust(3, "0")) if frac else 0
            start += ((h * 60 + mi - _offset_minutes(tz)) * 60 + min(s, 59)) * 1000 + (999 if s == 60 else millis)
    except ValueError:
        return None
    return _fmt(start), _fmt(start + span - 1)
