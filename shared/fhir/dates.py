"""FHIR date, dateTime and instant values as UTC ranges, for indexing and date search."""
from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$")


def _fmt(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


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
            tzinfo = UTC if tz in (None, "Z") else datetime.strptime(tz.replace(":", ""), "%z").tzinfo
            micro = int(round(float(frac or "0") * 1_000_000)) if frac else 0
            lo = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micro,
                          tzinfo=tzinfo)
            hi = lo + (timedelta(seconds=1) if frac is None else timedelta(milliseconds=1))
    except ValueError:
        return None
    return _fmt(lo), _fmt(hi - timedelta(milliseconds=1))
