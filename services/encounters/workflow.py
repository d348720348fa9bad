"""The session (Encounter) status workflow and what each status requires (docs/careplan-rules.md, "Sessions").

    planned -> arrived -> in-progress -> finished   (forward only; a step may be skipped, e.g. a clinician
                                                      documents a session as finished after it took place)
    planned | arrived | in-progress -> cancelled     (needs a reason; no-show is a reason code)
    any -> entered-in-error

A cancelled session carries its reason in the core extension encounter-reasonCancelled (R4 Encounter has no
statusReason), coded in the local session-cancellation-reason system.
"""
from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from shared import codes
from shared.fhir.outcome import FhirError, Issue

REASON_CANCELLED = "http://hl7.org/fhir/StructureDefinition/encounter-reasonCancelled"
CANCELLATION_REASON = f"{codes.CODE_BASE}/session-cancellation-reason"
CANCELLATION_REASONS = {
    "no-show": "Patient did not attend",
    "patient-cancelled": "Cancelled by the patient in advance",
    "program-cancelled": "Cancelled by the program (clinician absence, closure)",
    "plan-changed": "No longer in the care plan",
}
FORWARD = ("planned", "arrived", "in-progress", "finished")
STATUSES = frozenset({*FORWARD, "cancelled", "entered-in-error"})
_CANCELLABLE = frozenset({"planned", "arrived", "in-progress"})
_REASON_EXPRESSION = f"Encounter.extension('{REASON_CANCELLED}')"


def allowed(old: str | None, new: str) -> bool:
    """Whether a session may move from old (None: it is being created) to new."""
    if new not in STATUSES or old == new:
        return new in STATUSES
    if old is None:
        return new != "entered-in-error"  # a record is created in error only by being corrected later
    if new == "entered-in-error":
        return True
    if new == "cancelled":
        return old in _CANCELLABLE
    return old in FORWARD and new in FORWARD and FORWARD.index(new) > FORWARD.index(old)


def check_transition(old: dict[str, Any] | None, new: dict[str, Any]) -> list[Issue]:
    """Problems with storing `new` over `old`: business-rule issues (409) and missing elements (422)."""
    before, after = (old or {}).get("status"), new.get("status", "")
    if after not in STATUSES:
        return [Issue(f"status {after!r} is not used for IOP sessions; use one of {', '.join(sorted(STATUSES))}",
                      "code-invalid", expression="Encounter.status")]
    if not allowed(before, after):
        return [Issue(f"a session cannot go from {before} to {after}", "business-rule", expression="Encounter.status")]
    return [*_finished_issues(new), *_reason_issues(new)]


def transition_error(old: dict[str, Any] | None, new: dict[str, Any]) -> FhirError | None:
    """The error to answer: 409 when the workflow forbids the change, 422 when the resource is incomplete."""
    issues = check_transition(old, new)
    if not issues:
        return None
    return FhirError(409 if any(i.code == "business-rule" for i in issues) else 422, issues)


def cancellation_reason(encounter: dict[str, Any]) -> str | None:
    """The session-cancellation-reason code, or the free text when a partner sent only text."""
    concept = next((e.get("valueCodeableConcept") for e in encounter.get("extension", [])
                    if e.get("url") == REASON_CANCELLED), None) or {}
    code = next((c.get("code") for c in concept.get("coding", []) if c.get("system") == CANCELLATION_REASON), None)
    return code or concept.get("text") or None


def cancel(encounter: dict[str, Any], reason: str, at: datetime) -> dict[str, Any]:
    """The session cancelled for one of CANCELLATION_REASONS, with its old status kept in statusHistory."""
    return with_cancellation_reason(advance(encounter, "cancelled", at), reason)


def with_cancellation_reason(encounter: dict[str, Any], reason: str) -> dict[str, Any]:
    """A copy of the session carrying the reason (one of CANCELLATION_REASONS) in encounter-reasonCancelled."""
    if reason not in CANCELLATION_REASONS:
        raise ValueError(f"unknown cancellation reason {reason!r}; use one of {', '.join(CANCELLATION_REASONS)}")
    coding = {"system": CANCELLATION_REASON, "code": reason, "display": CANCELLATION_REASONS[reason]}
    marked = copy.deepcopy(encounter)
    others = [e for e in marked.get("extension", []) if e.get("url") != REASON_CANCELLED]
    marked["extension"] = [*others, {"url": REASON_CANCELLED, "valueCodeableConcept": {"coding": [coding]}}]
    return marked


def advance(encounter: dict[str, Any], status: str, at: datetime) -> dict[str, Any]:
    """The session in its next status; the status it leaves goes to statusHistory, ending `at`."""
    if not allowed(encounter.get("status"), status):
        raise ValueError(f"a session cannot go from {encounter.get('status')} to {status}")
    moved = copy.deepcopy(encounter)
    history = moved.get("statusHistory", [])
    since = history[-1]["period"].get("end") if history else None
    left = {"status": encounter["status"], "period": {**({"start": since} if since else {}), "end": at.isoformat()}}
    moved.update(status=status, statusHistory=[*history, left])
    return moved


def _finished_issues(encounter: dict[str, Any]) -> list[Issue]:
    if encounter.get("status") != "finished":
        return []
    period = encounter.get("period", {})
    issues = [Issue(f"a finished session needs period.{edge}", "required", expression=f"Encounter.period.{edge}")
              for edge in ("start", "end") if not period.get(edge)]
    if issues:
        return issues
    try:
        backwards = _instant(period["end"]) < _instant(period["start"])
    except ValueError:
        return [Issue("period.start and period.end must be FHIR dateTimes", "value", expression="Encounter.period")]
    return [Issue("period.end is before period.start", "invariant", expression="Encounter.period.end")] * backwards


def _reason_issues(encounter: dict[str, Any]) -> list[Issue]:
    status, reason = encounter.get("status"), cancellation_reason(encounter)
    if status == "cancelled" and reason is None:
        return [Issue("a cancelled session needs a reason (encounter-reasonCancelled, e.g. no-show)", "required",
                      expression=_REASON_EXPRESSION)]
    if status not in ("cancelled", "entered-in-error") and reason is not None:
        return [Issue("a cancellation reason applies only to a cancelled session", "invariant",
                      expression=_REASON_EXPRESSION)]
    return []


def _instant(value: str) -> datetime:
    """A dateTime for ordering; a value without a zone (a date) is read as UTC so that the two can be compared."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
