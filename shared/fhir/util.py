"""Small helpers for FHIR JSON kept as plain dicts."""
from __future__ import annotations

from datetime import UTC, datetime


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
