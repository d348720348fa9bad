"""FHIR date, dateTime and instant values as the UTC ranges the search index stores."""
from __future__ import annotations

import pytest

from shared.fhir.dates import date_range


@pytest.mark.parametrize("value, expected", [
    ("2026", ("2026-01-01T00:00:00.000Z", "2026-12-31T23:59:59.999Z")),
    ("2028-02", ("2028-02-01T00:00:00.000Z", "2028-02-29T23:59:59.999Z")),  # a leap year's February
    ("2026-02-03", ("2026-02-03T00:00:00.000Z", "2026-02-03T23:59:59.999Z")),
    ("2026-01-05T10:00:00Z", ("2026-01-05T10:00:00.000Z", "2026-01-05T10:00:00.999Z")),
    ("2026-01-05T10:00:00+05:30", ("2026-01-05T04:30:00.000Z", "2026-01-05T04:30:00.999Z")),
    ("2026-01-05T22:00:00.250-03:00", ("2026-01-06T01:00:00.250Z", "2026-01-06T01:00:00.250Z")),
    ("0099-01-01", ("0099-01-01T00:00:00.000Z", "0099-01-01T23:59:59.999Z")),
    # valid FHIR values whose UTC range leaves the calendar: clamped to its first and last millisecond
    ("9999-12-31T23:59:59-14:00", ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z")),
    ("0001-01-01T00:00:00+14:00", ("0001-01-01T00:00:00.000Z", "0001-01-01T00:00:00.000Z")),
    ("9999", ("9999-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z")),
    ("9999-12-31", ("9999-12-31T00:00:00.000Z", "9999-12-31T23:59:59.999Z")),
    ("2026-01-05T10:00:00.9999999Z", ("2026-01-05T10:00:00.999Z", "2026-01-05T10:00:00.999Z")),
])
def test_a_date_covers_the_utc_range_of_its_precision(value: str, expected: tuple[str, str]) -> None:
    assert date_range(value) == expected


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", "2026-02-30", "2026-01-05T10:00:00+25:00", "2026-1-5",
                                   "0000", "2026-01-05T10:00:00+14:30", "2026-01-05T24:00:00Z", "２０２６"])
def test_what_is_not_a_date_has_no_range(value: str) -> None:
    assert date_range(value) is None
