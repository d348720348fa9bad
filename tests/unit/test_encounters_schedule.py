"""Dated sessions from a CarePlan, and reconciling them with the Encounters already planned."""
from __future__ import annotations

import copy
from dataclasses import replace
from datetime import date, time
from zoneinfo import ZoneInfo

import pytest
from fhir.resources.R4B.encounter import Encounter

from services.encounters.schedule import (
    PLANNED_SESSION,
    PlannedSession,
    planned_encounter,
    planned_sessions,
    reconcile,
    session_from_encounter,
)
from services.encounters.workflow import REASON_CANCELLED
from shared import codes

TZ = ZoneInfo("America/Chicago")
BOUNDS = {"start": "2025-03-03", "end": "2025-04-27"}


def _activity(code: str, snomed: str, days: list[str], times: list[str] | None, hours: float,
              status: str = "scheduled") -> dict:
    repeat = {"boundsPeriod": BOUNDS, "frequency": len(days), "period": 1, "periodUnit": "wk", "dayOfWeek": days,
              "duration": hours, "durationUnit": "h", **({"timeOfDay": times} if times else {})}
    return {"detail": {"kind": "ServiceRequest", "status": status, "scheduledTiming": {"repeat": repeat},
                       "code": {"coding": [{"system": codes.CPT, "code": code},
                                           {"system": codes.SNOMED, "code": snomed}]}}}


CAREPLAN = {"resourceType": "CarePlan", "id": "cp-1", "status": "active", "intent": "plan",
            "subject": {"reference": "Patient/pat-1"},
            "activity": [_activity("90853", "76168009", ["mon", "wed", "fri"], ["09:00:00"], 3.0),
                         _activity("90834", "18512000", ["mon"], ["15:00:00"], 0.75)]}
WEEK_1 = (date(2025, 3, 3), date(2025, 3, 9))


def _plan(**changes) -> dict:
    careplan = copy.deepcopy(CAREPLAN)
    careplan.update(changes)
    return careplan


def test_one_week_of_sessions_in_date_and_time_order_with_stable_keys():
    sessions = planned_sessions(CAREPLAN, date(2025, 3, 3), 1)
    assert [(s.key, s.hours) for s in sessions] == [
        ("cp-1/0/90853/2025-03-03T09:00", 3.0), ("cp-1/1/90834/2025-03-03T15:00", 0.75),
        ("cp-1/0/90853/2025-03-05T09:00", 3.0), ("cp-1/0/90853/2025-03-07T09:00", 3.0)]
    assert planned_sessions(CAREPLAN, date(2025, 3, 3), 1) == sessions  # regeneration is idempotent


def test_sessions_stay_inside_the_activitys_bounds_period():
    sessions = planned_sessions(CAREPLAN, date(2025, 4, 21), 4)
    assert max(s.day for s in sessions) == date(2025, 4, 25)
    assert planned_sessions(CAREPLAN, date(2025, 2, 24), 1) == []


@pytest.mark.parametrize("changes", [{"status": "on-hold"}, {"status": "completed"}, {"status": "revoked"}])
def test_a_plan_that_is_not_active_plans_no_sessions(changes):
    assert planned_sessions(_plan(**changes), date(2025, 3, 3), 1) == []


@pytest.mark.parametrize("status", ["stopped", "cancelled", "completed", "on-hold"])
def test_an_activity_no_longer_delivered_plans_no_sessions(status):
    careplan = _plan()
    careplan["activity"][1]["detail"]["status"] = status
    assert {s.activity_index for s in planned_sessions(careplan, date(2025, 3, 3), 1)} == {0}


def test_times_of_day_and_their_default():
    careplan = _plan(activity=[_activity("90853", "76168009", ["tue"], ["09:00:00", "13:30:00"], 1.5),
                               _activity("90847", "108313002", ["thu"], None, 1.0),
                               _activity("90834", "18512000", [], ["10:00:00"], 1.0)])  # undated: booked by hand
    sessions = planned_sessions(careplan, date(2025, 3, 3), 1)
    assert [(s.day.isoformat(), s.time_of_day) for s in sessions] == [
        ("2025-03-04", time(9)), ("2025-03-04", time(13, 30)), ("2025-03-06", time(9))]


def test_a_changed_activity_code_gives_new_keys():
    careplan = _plan()
    careplan["activity"][1]["detail"]["code"]["coding"][0]["code"] = "90837"
    keys = {s.key for s in planned_sessions(careplan, date(2025, 3, 3), 1)}
    assert "cp-1/1/90837/2025-03-03T15:00" in keys and "cp-1/1/90834/2025-03-03T15:00" not in keys


def _existing(session: PlannedSession, n: int, status: str = "planned", reason: str | None = None) -> PlannedSession:
    return replace(session, encounter_id=f"enc-{n}", status=status, cancel_reason=reason)


WANTED = planned_sessions(CAREPLAN, date(2025, 3, 3), 1)


def test_nothing_planned_yet_creates_every_session():
    result = reconcile([], WANTED, window=WEEK_1)
    assert result.create == WANTED and result.cancel == [] and result.keep == []


def test_regenerating_an_existing_schedule_creates_and_cancels_nothing():
    existing = [_existing(s, n) for n, s in enumerate(WANTED)]
    result = reconcile(existing, WANTED, window=WEEK_1)
    assert result.create == [] and result.cancel == [] and len(result.keep) == 4


def test_a_dropped_date_is_cancelled_but_a_held_session_is_never_touched():
    existing = [_existing(WANTED[0], 0, "finished"), _existing(WANTED[1], 1, "arrived"),
                _existing(WANTED[2], 2), _existing(WANTED[3], 3)]
    result = reconcile(existing, [], window=WEEK_1)  # the plan no longer wants any of them
    assert [s.encounter_id for s in result.cancel] == ["enc-2", "enc-3"]
    assert [s.encounter_id for s in result.keep] == ["enc-0", "enc-1"]


def test_a_stopped_activity_has_its_planned_sessions_cancelled():
    careplan = _plan()
    careplan["activity"][0]["detail"]["status"] = "stopped"
    existing = [_existing(s, n) for n, s in enumerate(WANTED)]
    result = reconcile(existing, planned_sessions(careplan, date(2025, 3, 3), 1), window=WEEK_1)
    assert {s.activity_index for s in result.cancel} == {0} and len(result.cancel) == 3
    assert [s.activity_index for s in result.keep] == [1] and result.create == []


def test_duplicates_are_cancelled_keeping_the_held_session():
    existing = [_existing(WANTED[0], 1), _existing(WANTED[0], 0, "finished"), _existing(WANTED[1], 3),
                _existing(WANTED[1], 2)]
    result = reconcile(existing, WANTED[:2], window=WEEK_1)
    assert sorted(s.encounter_id for s in result.keep) == ["enc-0", "enc-2"]
    assert sorted(s.encounter_id for s in result.cancel) == ["enc-1", "enc-3"]


@pytest.mark.parametrize("reason, recreated", [
    ("no-show", False), ("patient-cancelled", False), ("program-cancelled", False), ("plan-changed", True),
])
def test_only_a_session_cancelled_by_a_plan_change_is_planned_again(reason, recreated):
    existing = [_existing(WANTED[0], 0, "cancelled", reason)]
    result = reconcile(existing, WANTED[:1], window=WEEK_1)
    assert (result.create == WANTED[:1]) is recreated and result.cancel == []


def test_an_encounter_entered_in_error_does_not_hold_its_slot():
    result = reconcile([_existing(WANTED[0], 0, "entered-in-error")], WANTED[:1], window=WEEK_1)
    assert result.create == WANTED[:1]


def test_sessions_outside_the_window_are_left_alone():
    later = planned_sessions(CAREPLAN, date(2025, 3, 10), 1)
    existing = [_existing(s, n) for n, s in enumerate(later)]
    result = reconcile(existing, WANTED, window=WEEK_1)
    assert result.cancel == [] and result.keep == [] and result.create == WANTED


def test_a_planned_encounter_carries_the_key_the_activity_and_its_code():
    encounter = planned_encounter(CAREPLAN, WANTED[0], TZ, episode_id="ep-1")
    assert encounter["status"] == "planned"
    assert encounter["identifier"] == [{"system": PLANNED_SESSION, "value": "cp-1/0/90853/2025-03-03T09:00"}]
    assert encounter["period"] == {"start": "2025-03-03T09:00:00-06:00", "end": "2025-03-03T12:00:00-06:00"}
    assert encounter["type"] == [CAREPLAN["activity"][0]["detail"]["code"]]
    assert encounter["basedOn"][0]["identifier"]["value"] == "cp-1/0"
    assert encounter["subject"] == {"reference": "Patient/pat-1"} and encounter["meta"]["security"]
    Encounter.model_validate(encounter)


def test_an_activity_without_a_session_kind_cannot_be_planned():
    careplan = _plan(activity=[_activity("99999", "1", ["mon"], None, 1.0)])
    [session] = planned_sessions(careplan, date(2025, 3, 3), 1)
    with pytest.raises(ValueError, match="no session kind"):
        planned_encounter(careplan, session, TZ)


def test_encounters_read_back_as_sessions_so_a_second_run_does_nothing():
    encounters = [{**planned_encounter(CAREPLAN, s, TZ), "id": f"enc-{n}"} for n, s in enumerate(WANTED)]
    existing = [session_from_encounter(e) for e in encounters]
    assert [(s.key, s.encounter_id, s.hours) for s in existing] == [(w.key, f"enc-{n}", w.hours)
                                                                     for n, w in enumerate(WANTED)]
    result = reconcile(existing, planned_sessions(CAREPLAN, date(2025, 3, 3), 1), window=WEEK_1)
    assert result.create == [] and result.cancel == []


def test_a_cancelled_encounter_reads_back_with_its_reason_and_an_unplanned_one_not_at_all():
    encounter = planned_encounter(CAREPLAN, WANTED[0], TZ)
    encounter.update(status="cancelled", extension=[{"url": REASON_CANCELLED, "valueCodeableConcept": {"coding": [
        {"system": f"{codes.CODE_BASE}/session-cancellation-reason", "code": "no-show"}]}}])
    assert session_from_encounter(encounter).cancel_reason == "no-show"
    assert session_from_encounter({"resourceType": "Encounter", "status": "finished"}) is None
