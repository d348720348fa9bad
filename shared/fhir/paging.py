"""Keyset paging of searches: the `_cursor` of `next` and `previous` links.

A search in creation order (no `_sort`) or sorted by `_lastUpdated` alone pages by the key of the last (or
first) resource of the page, not by an offset: each page is an index range however deep it lies, and a
resource created between two pages neither repeats nor pushes another out. The cursor is opaque to clients:
URL-safe base64 of `[order, direction, key…]`. `_offset` still pages by offset when a client sends it, and
searches sorted otherwise page by offset.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from shared.fhir.outcome import FhirError, Issue
from shared.fhir.store import Stored

# The orders that page by key: creation order, and _lastUpdated ascending or descending; creation order breaks
# ties in the direction of the sort.
ORDERS = {"created": ("r.created_seq ASC", "r.created_seq DESC"),
          "updated": ("r.last_updated ASC, r.created_seq ASC", "r.last_updated DESC, r.created_seq DESC"),
          "-updated": ("r.last_updated DESC, r.created_seq DESC", "r.last_updated ASC, r.created_seq ASC")}
_KEY_COLUMNS = {"created": "r.created_seq", "updated": "(r.last_updated, r.created_seq)",
                "-updated": "(r.last_updated, r.created_seq)"}
NEXT, PREVIOUS = "n", "p"
MAX_CURSOR = 200
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")


@dataclass(frozen=True)
class Cursor:
    order: str  # a key of ORDERS
    direction: str  # NEXT: the resources after `key` in the order; PREVIOUS: those before it
    key: tuple[Any, ...]

    def encode(self) -> str:
        raw = json.dumps([self.order, self.direction, *self.key], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    @property
    def backwards(self) -> bool:
        return self.direction == PREVIOUS

    def sql_order(self) -> str:
        """The order to read this page in: a page before the key is read backwards, then turned round."""
        forward, backward = ORDERS[self.order]
        return backward if self.backwards else forward

    def seek(self) -> tuple[str, list]:
        """The condition of this page: past the key in the direction it is read."""
        ascending = (self.order != "-updated") != self.backwards
        placeholders = "?" if self.order == "created" else "(?, ?)"
        return f"{_KEY_COLUMNS[self.order]} {'>' if ascending else '<'} {placeholders}", list(self.key)


def key_of(order: str, stored: Stored) -> tuple[Any, ...]:
    return (stored.created_seq,) if order == "created" else (stored.last_updated, stored.created_seq)


def _refused() -> FhirError:
    return FhirError(400, [Issue("_cursor is not a cursor of this search: follow the next and previous links of "
                                 "the bundle as given", code="invalid", expression="_cursor")])


def decode(raw: str, order: str | None) -> Cursor:
    """A cursor given back by a client, for a search in `order` (None: a search that pages by offset)."""
    if len(raw) > MAX_CURSOR:  # no cursor this server gives is longer: nothing past it is even decoded
        raise _refused()
    try:
        padded = raw + "=" * (-len(raw) % 4)
        value = json.loads(base64.b64decode(padded, altchars=b"-_", validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise _refused() from None
    if not isinstance(value, list) or len(value) < 3 or value[0] != order or value[1] not in (NEXT, PREVIOUS):
        raise _refused()
    key = tuple(value[2:])
    shape = (int,) if order == "created" else (str, int)
    if len(key) != len(shape) or not all(type(k) is t for k, t in zip(key, shape, strict=True)):
        raise _refused()
    if not 0 <= key[-1] < 2**63 or (len(key) == 2 and not _INSTANT.fullmatch(key[0])):
        raise _refused()  # what the stores' columns hold: a 64-bit sequence number, an instant as stored
    return Cursor(order, value[1], key)


def cursor_links(url: str, params: list[tuple[str, str]], count: int, cursor: Cursor | None, order: str,
                 items: list[Stored], more: bool) -> list[dict[str, str]]:
    """self, next and previous of a page read by key. `more`: whether the read found resources past the page
    in the direction it was read; the other direction holds some whenever the page was reached by a cursor."""
    def link(relation: str, at: Cursor | None) -> dict[str, str]:
        query = [*params, ("_count", str(count))] + ([("_cursor", at.encode())] if at else [])
        return {"relation": relation, "url": f"{url}?{urlencode(query)}"}

    links = [link("self", cursor)]
    if not items or not count:
        return links
    backwards = cursor is not None and cursor.backwards
    if more or backwards:
        links.append(link("next", Cursor(order, NEXT, key_of(order, items[-1]))))
    if (more and backwards) or (cursor is not None and not backwards):
        links.append(link("previous", Cursor(order, PREVIOUS, key_of(order, items[0]))))
    return links
