"""Keyset cursors: what a page's links carry, and what the server takes back."""
from __future__ import annotations

import base64
import json

import pytest

from shared.fhir.outcome import FhirError
from shared.fhir.paging import NEXT, PREVIOUS, Cursor, decode


def raw(*value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(value)).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("cursor", [Cursor("created", NEXT, (7,)),
                                    Cursor("updated", PREVIOUS, ("2026-12-07T10:00:00.123Z", 41)),
                                    Cursor("-updated", NEXT, ("2026-12-07T10:00:00Z", 2**63 - 1))])
def test_a_cursor_comes_back_as_it_was_given(cursor: Cursor) -> None:
    assert decode(cursor.encode(), cursor.order) == cursor


@pytest.mark.parametrize(("text", "order"), [
    ("", "created"), ("!!!", "created"), ("bm90IGpzb24", "created"), (raw("created", NEXT), "created"),
    (raw("created", "x", 1), "created"), (raw("created", NEXT, "1"), "created"),
    (raw("created", NEXT, True), "created"),
    (raw("created", NEXT, 1.5), "created"), (raw("created", NEXT, 2**63), "created"),
    (raw("created", NEXT, -1), "created"), (raw("created", NEXT, 1, 2), "created"),
    (base64.b64encode(b'["created","n",1]').decode() + "==", "created"),
    (raw("updated", NEXT, "yesterday", 1), "updated"),
    (raw("updated", NEXT, "2026-01-01T00:00:00Z\x00", 1), "updated"),
    (raw("updated", NEXT, 1, "2026-01-01T00:00:00Z"), "updated"),
    (base64.urlsafe_b64encode(b"[" * 3000).decode(), "created"), (raw("created", NEXT, 1) + "A" * 300, "created")])
def test_anything_else_is_refused_as_400_on_cursor(text: str, order: str) -> None:
    with pytest.raises(FhirError) as refused:
        decode(text, order)
    assert refused.value.status == 400 and refused.value.issues[0].expression == "_cursor"


def test_a_cursor_of_one_order_is_refused_by_a_search_in_another() -> None:
    given = Cursor("updated", NEXT, ("2026-12-07T10:00:00.123Z", 41)).encode()
    for order in ("-updated", "created", None):
        with pytest.raises(FhirError):
            decode(given, order)


def test_a_page_before_the_key_is_read_backwards_past_it() -> None:
    assert Cursor("created", NEXT, (5,)).seek() == ("r.created_seq > ?", [5])
    assert Cursor("created", PREVIOUS, (5,)).seek() == ("r.created_seq < ?", [5])
    assert Cursor("created", PREVIOUS, (5,)).sql_order() == "r.created_seq DESC"
    descending = Cursor("-updated", NEXT, ("2026-01-01T00:00:00Z", 3))
    assert descending.seek() == ("(r.last_updated, r.created_seq) < (?, ?)", ["2026-01-01T00:00:00Z", 3])
    assert descending.sql_order() == "r.last_updated DESC, r.created_seq DESC"
