"""Small helpers for FHIR JSON kept as plain dicts."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson


def now_instant() -> str:
    """The current time as a FHIR instant with milliseconds, in UTC."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ref(resource_type: str, resource_id: str) -> dict[str, str]:
    return {"reference": f"{resource_type}/{resource_id}"}


def ref_id(reference: dict | None) -> str | None:
    """The logical id in a relative reference such as {"reference": "Patient/123"}."""
    if not reference or "reference" not in reference:
        return None
    return reference["reference"].split("/_history/")[0].rsplit("/", 1)[-1]


def compact_json(value: Any) -> str:
    """`value` as compact JSON text, non-ASCII characters kept: what the store and the event values hold.

    orjson writes it several times faster than the standard library. What orjson refuses and `json` writes
    (an integer beyond 64 bits, as a FHIR decimal may be; a lone surrogate) goes through `json`. Read back,
    the text gives the value `json`'s did (a float's exponent may be spelled 1e-7 rather than 1e-07), but for
    a float NaN or infinity, which no parsed input holds (JSON input refuses them) and orjson writes as null.
    """
    try:
        return orjson.dumps(value).decode("utf-8")
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
