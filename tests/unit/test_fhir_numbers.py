"""Whole numbers from requests: ASCII digits only, within bounds, never past what SQLite holds."""
from __future__ import annotations

import pytest

from shared.fhir.numbers import MAX_NUMBER, parse_int, whole_number
from shared.fhir.outcome import FhirError


@pytest.mark.parametrize("raw, value", [("0", 0), ("42", 42), ("-3", -3), ("007", 7), ("9" * 18, MAX_NUMBER)])
def test_ascii_digits_are_a_number(raw: str, value: int) -> None:
    assert whole_number(raw) == value


@pytest.mark.parametrize("raw", ["", " 7", "7 ", "+7", "1_000", "²", "①", "١٢", "７", "1e3", "1.0", "0x10", "9" * 65])
def test_anything_else_is_not(raw: str) -> None:
    assert whole_number(raw) is None


def test_a_request_number_is_bounded_or_capped() -> None:
    assert parse_int("50", "_count", 0, 1000) == 50
    assert parse_int("99999999999999999999", "_count", 0, 1000, cap=True) == 1000
    for raw in ("-1", "1001", "99999999999999999999", "²"):
        with pytest.raises(FhirError) as refused:
            parse_int(raw, "_count", 0, 1000)
        assert refused.value.status == 400
        assert refused.value.issues[0].expression == "_count"
