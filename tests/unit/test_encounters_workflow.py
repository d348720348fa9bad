"""The session status workflow: which changes are allowed and what each status requires."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.encounter import Encounter

from services.encounters.workflow import (
    CANCELLATION_REASON,
    REASON_CANCELLED,
    advance,
    allowed,
    cancel,
    cancellation_reason,
    check_transition,
    transition_error,
    with_cancellation_reason,
)
from shared import codes

AT = datetime(2025, 3, 3, 12, 5, tzinfo=UTC)


def _encounter(status: str, **extra) -> dict:
    return {"resourceType": "Encounter", "id": "enc-1", "status": status,
            "class": {"system": codes.V3_ACT_CODE, "code": "AMB"}, "subject": {"reference": "Patient/pat-1"},
            "period": {"start": "2025-03-03T09:00:00Z"}, **extra}


HELD = {"period": {"start": "2025-03-03T09:00:00Z", "end": "2025-03-03T12:00:00Z"}}
NO_SHOW = {"extension": [{"url": REASON_CANCELLED, "valueCodeableConcept": {"coding": [
    {"system": CANCELLATION_REASON, "code": "no-show"}]}}]}


@pytest.mark.parametrize("old, new, ok", [
    (None, "planned", True), (None, "finished", True), (None, "cancelled", True), (None, "entered-in-error", False),
    ("planned", "arrived", True), ("arrived", "in-progress", True), ("in-progress", "finished", True),
    ("planned", "in-progress", True), ("planned", "finished", True),        # forward steps may be skipped
    ("finished", "in-progress", False), ("in-progress", "planned", False),  # never backward
    ("planned", "cancelled", True), ("arrived", "cancelled", True), ("in-progress", "cancelled", True),
    ("finished", "cancelled", False), ("cancelled", "planned", False), ("cancelled", "finished", False),
    ("finished", "entered-in-error", True), ("cancelled", "entered-in-error", True),
    ("entered-in-error", "planned", False), ("planned", "planned", True), ("finished", "finished", True),
    ("planned", "triaged", False), ("planned", "onleave", False),
])
def test_the_status_decision_table(old, new, ok):
    assert allowed(old, new) is ok


def test_a_backward_change_is_a_business_rule_conflict():
    [issue] = check_transition(_encounter("finished", **HELD), _encounter("planned"))
    assert (issue.code, issue.expression) == ("business-rule", "Encounter.status")
    assert transition_error(_encounter("finished", **HELD), _encounter("planned")).status == 409


def test_a_status_the_iop_does_not_use_is_an_invalid_code():
    [issue] = check_transition(None, _encounter("onleave"))
    assert issue.code == "code-invalid" and transition_error(None, _encounter("onleave")).status == 422


@pytest.mark.parametrize("period, expressions", [
    ({"start": "2025-03-03T09:00:00Z"}, ["Encounter.period.end"]),
    ({}, ["Encounter.period.start", "Encounter.period.end"]),
    ({"start": "2025-03-03T09:00:00Z", "end": "2025-03-03T08:00:00Z"}, ["Encounter.period.end"]),
    ({"start": "2025-03-03", "end": "yesterday"}, ["Encounter.period"]),
])
def test_a_finished_session_needs_a_whole_period(period, expressions):
    issues = check_transition(_encounter("in-progress"), _encounter("finished", period=period))
    assert [i.expression for i in issues] == expressions
    assert transition_error(_encounter("in-progress"), _encounter("finished", period=period)).status == 422


def test_a_held_session_with_a_date_and_a_zoned_time_compares_without_error():
    period = {"start": "2025-03-03", "end": "2025-03-03T12:00:00+01:00"}
    assert check_transition(None, _encounter("finished", period=period)) == []


def test_a_cancelled_session_needs_a_reason():
    [issue] = check_transition(_encounter("planned"), _encounter("cancelled"))
    assert issue.code == "required" and issue.expression == f"Encounter.extension('{REASON_CANCELLED}')"
    assert check_transition(_encounter("planned"), _encounter("cancelled", **NO_SHOW)) == []


def test_a_partners_reason_as_text_only_is_accepted():
    text_only = {"extension": [{"url": REASON_CANCELLED, "valueCodeableConcept": {"text": "snowed in"}}]}
    assert check_transition(None, _encounter("cancelled", **text_only)) == []
    assert cancellation_reason(_encounter("cancelled", **text_only)) == "snowed in"


def test_a_cancellation_reason_on_a_session_that_was_not_cancelled_is_refused():
    [issue] = check_transition(None, _encounter("finished", **HELD, **NO_SHOW))
    assert issue.code == "invariant"
    assert check_transition(_encounter("cancelled", **NO_SHOW), _encounter("entered-in-error", **NO_SHOW)) == []


def test_a_valid_change_has_no_error():
    assert transition_error(_encounter("planned"), _encounter("finished", **HELD)) is None


def test_cancel_records_the_reason_and_the_status_left_behind():
    cancelled = cancel(_encounter("planned"), "no-show", AT)
    assert cancelled["status"] == "cancelled" and cancellation_reason(cancelled) == "no-show"
    assert cancelled["statusHistory"] == [{"status": "planned", "period": {"end": "2025-03-03T12:05:00+00:00"}}]
    assert check_transition(_encounter("planned"), cancelled) == []
    Encounter.model_validate(cancelled)


def test_cancel_refuses_unknown_reasons_and_held_sessions():
    with pytest.raises(ValueError, match="unknown cancellation reason"):
        cancel(_encounter("planned"), "felt like it", AT)
    with pytest.raises(ValueError, match="finished to cancelled"):
        cancel(_encounter("finished", **HELD), "no-show", AT)


def test_advance_chains_the_status_history():
    arrived = advance(_encounter("planned"), "arrived", datetime(2025, 3, 3, 8, 55, tzinfo=UTC))
    started = advance(arrived, "in-progress", datetime(2025, 3, 3, 9, 0, tzinfo=UTC))
    assert started["statusHistory"] == [
        {"status": "planned", "period": {"end": "2025-03-03T08:55:00+00:00"}},
        {"status": "arrived", "period": {"start": "2025-03-03T08:55:00+00:00", "end": "2025-03-03T09:00:00+00:00"}}]
    Encounter.model_validate(started)


def test_setting_a_reason_replaces_the_previous_one():
    marked = with_cancellation_reason(with_cancellation_reason(_encounter("cancelled"), "no-show"), "plan-changed")
    assert [e["url"] for e in marked["extension"]] == [REASON_CANCELLED]
    assert cancellation_reason(marked) == "plan-changed"
