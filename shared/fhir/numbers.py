"""Whole numbers taken from a request: query parameters, path segments, ETags, operation parameters.

`str.isdigit()` accepts '²' and '①', which `int()` refuses, and `int()` accepts '١٢', ' 7 ' and '1_000',
which no FHIR client means; a value past 64 bits overflows SQLite. One parser for all of them: ASCII
digits only, within the bounds the caller names (never past 18 digits).
"""
from __future__ import annotations

import re

from shared.fhir.outcome import FhirError

_WHOLE = re.compile(r"-?[0-9]{1,64}")  # longer is no number a client means, and int() would be slow on it
MAX_NUMBER = 10**18 - 1  # 18 digits: below SQLite's 2**63 - 1, whatever arithmetic follows


def whole_number(raw: str | None) -> int | None:
    """The integer `raw` spells in ASCII digits (an optional leading '-'), or None if it spells none."""
    if not isinstance(raw, str) or not _WHOLE.fullmatch(raw):
        return None
    return int(raw)


def parse_int(raw: str, name: str, low: int = 0, high: int = MAX_NUMBER, cap: bool = False,
              expression: str | None = None) -> int:
    """`raw` as an integer in [low, high], else FhirError 400 naming `name`; with `cap`, larger values become high."""
    value = whole_number(raw)
    where = expression or name
    if value is None:
        raise FhirError.single(400, f"{name} must be a whole number written in the digits 0-9", expression=where)
    if value < low:
        raise FhirError.single(400, f"{name} must be at least {low}", expression=where)
    if value > high:
        if cap:
            return high
        raise FhirError.single(400, f"{name} must be at most {high}", expression=where)
    return value
