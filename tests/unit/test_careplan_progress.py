"""Progress monitoring: when sessions are held or missed and scores come in, then the plan and goals move."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from fhir.resources.R4B.careplan import CarePlan

from services.careplan.assessment import Assessment
from services.careplan.plan_rules import PlanIds, draft_plan
from services.careplan.progress import (
    SESSION_ATTENDANCE,
    AdjustmentSignal,
    SessionOutcome,
    achievement,
    apply_session_outcome,
    attendance_rate,
    goal_achievement,
    missed_streak,
    planned_count,
    session_outcome,
    update_goals,
    with_achievement,
)
from services.encounters.sessions import build_encounter
from shared import codes

ASSESSMENT = Assessment("pat-1", "qr-1", "2.1", "iop", {codes.PHQ9_TOTAL: 16, codes.GAD7_TOTAL: 12},
                        alcohol_use_positive=True)
PLAN = draft_plan(ASSESSMENT, date(2025, 3, 3), PlanIds.derived_from("qr-1"))
CAREPLAN = PLAN.careplan
GROUP, INDIVIDUAL = 0, 1
GROUP_CODES = frozenset({(codes.CPT, "90853"), (codes.SNOMED, "76168009")})


def _session(encounter_id: str, status: str, day: int, index: int | None = GROUP, no_show: bool = False,
             careplan_id: str | None = CAREPLAN["id"], session_codes: frozenset = GROUP_CODES) -> SessionOutcome:
    return SessionOutcome(encounter_id, status, f"2025-03-{day:02d}T09:00:00Z",
                          careplan_id if index is not None else None, index, session_codes, no_show)


def _apply(careplan: dict, *sessions: SessionOutcome) -> tuple[dict, list[AdjustmentSignal]]:
    signals: list[AdjustmentSignal] = []
    for session in sessions:
        careplan, raised = apply_session_outcome(careplan, session)
        signals += raised
    return careplan, signals


def _counts(element: dict) -> dict:
    outer = next(e for e in element["extension"] if e["url"] == SESSION_ATTENDANCE)
    return {p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in outer["extension"]}


def test_the_encounter_contract_an_encounters_session_reads_as_a_session_outcome():
    start = datetime(2025, 3, 3, 14, tzinfo=UTC)
    finished = build_encounter("group", "pat-1", start=start, end=start + timedelta(hours=3), status="finished",
                               encounter_id="enc-1", activity=(CAREPLAN["id"], GROUP))
    no_show = build_encounter("individual", "pat-1", start=start, status="cancelled", cancel_reason="no-show",
                              encounter_id="enc-2")
    read = session_outcome(finished)
    assert (read.encounter_id, read.outcome, read.careplan_id, read.activity_index) == \
        ("enc-1", "attended", CAREPLAN["id"], GROUP)
    assert read.session_date == "2025-03-03T14:00:00+00:00" and (codes.CPT, "90853") in read.codes
    missed = session_outcome(no_show)
    assert missed.no_show and missed.outcome == "missed" and missed.activity_index is None


@pytest.mark.parametrize("status, no_show, outcome", [
    ("finished", False, "attended"), ("cancelled", True, "missed"), ("cancelled", False, "excused"),
    ("entered-in-error", False, "removed"), ("planned", False, None), ("in-progress", False, None),
])
def test_how_an_encounter_status_counts(status, no_show, outcome):
    assert _session("e", status, 3, no_show=no_show).outcome == outcome


def test_an_attended_session_is_recorded_on_its_activity_and_starts_it():
    careplan, signals = _apply(CAREPLAN, _session("enc-1", "finished", 3))
    group = careplan["activity"][GROUP]
    assert group["detail"]["status"] == "in-progress"
    assert group["outcomeReference"][0]["reference"] == "Encounter/enc-1"
    assert _counts(group) == {"planned": 24, "attended": 1, "missed": 0}
    assert _counts(careplan)["rate"]["value"] == 100.0
    assert signals == [] and CAREPLAN["activity"][GROUP]["detail"]["status"] == "scheduled"  # input untouched
    CarePlan.model_validate(careplan)


def test_applying_the_same_encounter_twice_changes_nothing():
    once, _ = _apply(CAREPLAN, _session("enc-1", "finished", 3))
    twice, signals = apply_session_outcome(once, _session("enc-1", "finished", 3))
    assert twice is once and signals == []


def test_a_no_show_counts_as_missed_and_does_not_start_the_activity():
    careplan, _ = _apply(CAREPLAN, _session("enc-1", "cancelled", 3, no_show=True))
    assert careplan["activity"][GROUP]["detail"]["status"] == "scheduled"
    assert _counts(careplan["activity"][GROUP]) == {"planned": 24, "attended": 0, "missed": 1}
    assert attendance_rate(careplan) == 0.0


def test_a_session_cancelled_for_another_reason_neither_counts_nor_breaks_the_streak():
    careplan, signals = _apply(CAREPLAN, _session("a", "cancelled", 3, no_show=True),
                               _session("b", "cancelled", 5), _session("c", "cancelled", 7, no_show=True))
    assert attendance_rate(careplan) == 0.0 and _counts(careplan)["attended"] == 0
    assert missed_streak(careplan) == 2 and [s.kind for s in signals] == ["missed-sessions"]


def test_two_missed_sessions_in_a_row_raise_a_missed_sessions_signal_and_a_third_raises_it_again():
    careplan, signals = _apply(CAREPLAN, _session("a", "finished", 3), _session("b", "cancelled", 5, no_show=True))
    assert signals == []
    careplan, signals = _apply(careplan, _session("c", "cancelled", 6, index=INDIVIDUAL, no_show=True))
    assert signals == [AdjustmentSignal("missed-sessions", "2 scheduled sessions missed in a row",
                                        f"CarePlan/{CAREPLAN['id']}")]
    careplan, signals = _apply(careplan, _session("d", "cancelled", 7, no_show=True))
    assert [s.reason for s in signals] == ["3 scheduled sessions missed in a row"]
    assert _counts(careplan)["missed-streak"] == 3


def test_an_attended_session_breaks_the_streak():
    careplan, signals = _apply(CAREPLAN, _session("a", "cancelled", 3, no_show=True), _session("b", "finished", 5),
                               _session("c", "cancelled", 7, no_show=True))
    assert missed_streak(careplan) == 1 and signals == []
    assert attendance_rate(careplan) == pytest.approx(1 / 3)


def test_a_late_recorded_older_no_show_does_not_extend_the_streak():
    careplan, signals = _apply(CAREPLAN, _session("a", "finished", 5), _session("b", "cancelled", 7, no_show=True),
                               _session("c", "cancelled", 3, no_show=True))
    assert missed_streak(careplan) == 1 and signals == []


def test_an_encounter_entered_in_error_is_taken_back_out():
    careplan, _ = _apply(CAREPLAN, _session("a", "finished", 3), _session("b", "finished", 5))
    careplan, signals = _apply(careplan, _session("a", "entered-in-error", 3))
    assert [r["reference"] for r in careplan["activity"][GROUP]["outcomeReference"]] == ["Encounter/b"]
    assert _counts(careplan)["attended"] == 1 and signals == []


def test_taking_back_the_only_session_leaves_no_empty_outcome_list():
    careplan, _ = _apply(CAREPLAN, _session("a", "finished", 3), _session("a", "entered-in-error", 3))
    assert "outcomeReference" not in careplan["activity"][GROUP] and attendance_rate(careplan) is None
    CarePlan.model_validate(careplan)


@pytest.mark.parametrize("session", [
    _session("x", "entered-in-error", 3),                                      # never applied
    _session("x", "planned", 3), _session("x", "arrived", 3),                  # not held yet
    _session("x", "finished", 3, careplan_id="another-plan"),                 # another plan's activity
    _session("x", "finished", 3, index=None, session_codes=frozenset({(codes.HCPCS, "H0004")})),  # a check-in
    _session("x", "finished", 3, index=99),                                    # no such activity
])
def test_sessions_that_do_not_belong_to_the_plan_change_nothing(session):
    assert apply_session_outcome(CAREPLAN, session) == (CAREPLAN, [])


def test_without_based_on_a_session_is_matched_by_its_codes():
    individual = frozenset({(codes.CPT, "90834")})
    careplan, _ = _apply(CAREPLAN, _session("x", "finished", 3, index=None, session_codes=individual))
    assert careplan["activity"][INDIVIDUAL]["outcomeReference"][0]["reference"] == "Encounter/x"


def test_a_plan_that_is_no_longer_active_is_not_updated():
    completed = {**CAREPLAN, "status": "completed"}
    assert apply_session_outcome(completed, _session("x", "finished", 3)) == (completed, [])


def test_attendance_rate_is_unknown_before_the_first_session():
    assert attendance_rate(CAREPLAN) is None and missed_streak(CAREPLAN) == 0


def test_planned_sessions_count_the_dated_days_of_the_bounds_period():
    assert [planned_count(a) for a in CAREPLAN["activity"][:2]] == [24, 8]
    assert planned_count({"detail": {"scheduledTiming": {"repeat": {"frequency": 1}}}}) == 0


BELOW_10 = {"detailQuantity": {"comparator": "<", "value": 10}}
AT_LEAST_28 = {"detailQuantity": {"comparator": ">=", "value": 28}}


@pytest.mark.parametrize("baseline, latest, target, expected", [
    (16, 9, BELOW_10, "achieved"),        # target reached, whatever the drop
    (12, 9, BELOW_10, "achieved"),
    (24, 12, BELOW_10, "improving"),      # a 50 % drop is a response
    (24, 13, BELOW_10, "no-change"),      # 46 %: not yet a response
    (16, 20, BELOW_10, "no-change"),      # +4: within noise
    (16, 21, BELOW_10, "worsening"),      # +5 points
    (0, 28, AT_LEAST_28, "achieved"),     # more is better
    (3, 10, AT_LEAST_28, "improving"),
    (10, 3, AT_LEAST_28, "worsening"),
    (3, 3, AT_LEAST_28, "no-change"),
])
def test_goal_achievement_decision_table(baseline, latest, target, expected):
    assert goal_achievement(baseline, latest, target) == expected


def _phq9_goal() -> dict:
    return next(g for g in PLAN.goals if g["target"][0]["measure"]["coding"][0]["code"] == codes.PHQ9_TOTAL)


def test_new_scores_update_the_goals_they_measure_and_only_those():
    changed, signals = update_goals(PLAN.goals, {codes.PHQ9_TOTAL: 8})
    assert [(g["id"], achievement(g)) for g in changed] == [(_phq9_goal()["id"], "achieved")]
    assert signals == [] and achievement(_phq9_goal()) == "in-progress"  # the input goals are not changed


def test_a_remeasured_unchanged_score_turns_in_progress_into_no_change():
    [anxiety], _ = update_goals(PLAN.goals, {codes.GAD7_TOTAL: 12})
    assert anxiety["description"]["text"].startswith("Reduce anxiety") and achievement(anxiety) == "no-change"


def test_a_goal_achieved_again_is_sustaining_and_then_unchanged():
    achieved = with_achievement(_phq9_goal(), "achieved")
    [sustaining], _ = update_goals([achieved], {codes.PHQ9_TOTAL: 6})
    assert achievement(sustaining) == "sustaining"
    assert update_goals([sustaining], {codes.PHQ9_TOTAL: 4}) == ([], [])


def test_a_worsening_score_raises_a_signal_once():
    [worse], signals = update_goals(PLAN.goals, {codes.PHQ9_TOTAL: 22})
    assert achievement(worse) == "worsening"
    assert signals == [AdjustmentSignal("worsening-score", "Patient Health Questionnaire 9 item (PHQ-9) total score "
                                        "[Reported] rose from 16 at intake to 22", f"Goal/{worse['id']}")]
    assert update_goals([worse], {codes.PHQ9_TOTAL: 22}) == ([], [])


def test_goals_without_a_baseline_or_no_longer_active_are_left_alone():
    closed = {**_phq9_goal(), "lifecycleStatus": "cancelled"}
    no_baseline = {k: v for k, v in _phq9_goal().items() if k != "extension"}
    assert update_goals([closed, no_baseline], {codes.PHQ9_TOTAL: 2}) == ([], [])


def test_an_encounter_without_an_id_cannot_be_counted():
    with pytest.raises(ValueError, match="without an id"):
        session_outcome({"resourceType": "Encounter", "status": "finished"})
