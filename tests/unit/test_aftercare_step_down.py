"""Given a graduated IOP plan, when the patient steps down, then aftercare exists as valid FHIR R4."""
from datetime import date

import pytest
from fhir.resources.R4B import get_fhir_model_class

from services.aftercare.step_down import (
    StepDownIds,
    StepDownOptions,
    indicates_medication,
    step_down_plan,
)
from shared import codes

GRADUATION = date(2025, 3, 7)
SUBJECT = {"reference": "Patient/p1"}


def iop_plan(**extra) -> dict:
    plan = {"resourceType": "CarePlan", "id": "iop-1", "status": "completed", "intent": "plan", "subject": SUBJECT,
            "addresses": [{"reference": "Condition/oud"}],
            "activity": [{"detail": {"status": "completed", "description": "Group therapy 3x/week"}}]}
    return {**plan, **extra}


def iop_goal(goal_id: str, achievement: str, lifecycle: str = "active") -> dict:
    return {"resourceType": "Goal", "id": goal_id, "lifecycleStatus": lifecycle,
            "achievementStatus": {"coding": [{"system": codes.GOAL_ACHIEVEMENT, "code": achievement}]},
            "description": {"text": f"goal {goal_id}"}, "subject": SUBJECT,
            "target": [{"measure": {"coding": [{"system": codes.LOINC, "code": codes.PHQ9_TOTAL}]},
                        "detailQuantity": {"value": 5, "comparator": "<"}, "dueDate": "2025-03-01"}]}


def plan_for(careplan=None, goals=(), options=StepDownOptions()):
    return step_down_plan(careplan or iop_plan(), list(goals), StepDownIds.derived("iop-1"), GRADUATION, options)


def by_id(resources: list[dict]) -> dict[str, dict]:
    return {r["id"]: r for r in resources}


def test_every_resource_parses_as_r4b_and_carries_part2_labels():
    plan = plan_for(goals=[iop_goal("g1", "improving")])
    for resource in plan.resources():
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        assert resource["meta"]["security"] == codes.PART2_LABELS


def test_aftercare_careplan_replaces_the_iop_plan_for_twelve_weeks():
    careplan = plan_for().careplan
    assert (careplan["status"], careplan["intent"]) == ("active", "plan")
    assert careplan["id"] == "iop-1-aftercare"
    assert careplan["subject"] == SUBJECT
    assert careplan["basedOn"] == careplan["replaces"] == [{"reference": "CarePlan/iop-1"}]
    assert careplan["period"] == {"start": "2025-03-07", "end": "2025-05-30"}
    categories = [c["coding"][0]["code"] for c in careplan["category"]]
    assert categories == ["assess-plan", "aftercare-step-down"]
    assert careplan["addresses"] == [{"reference": "Condition/oud"}]
    assert careplan["text"]["div"].startswith('<div xmlns="http://www.w3.org/1999/xhtml">')


def test_period_length_is_configurable():
    careplan = plan_for(options=StepDownOptions(weeks=8)).careplan
    assert careplan["period"]["end"] == "2025-05-02"


def test_referrals_are_active_orders_based_on_the_aftercare_plan():
    plan = plan_for()
    therapy, support = plan.referrals
    for request in plan.referrals:
        assert (request["status"], request["intent"]) == ("active", "order")
        assert request["category"][0]["coding"][0]["code"] == "409063005"
        assert request["basedOn"] == [{"reference": "CarePlan/iop-1-aftercare"}]
        assert request["subject"] == SUBJECT
        repeat = request["occurrenceTiming"]["repeat"]
        assert (repeat["frequency"], repeat["period"], repeat["periodUnit"]) == (1, 1, "wk")
        assert repeat["boundsPeriod"] == plan.careplan["period"]
    assert {"system": codes.CPT, "code": "90834"} in therapy["code"]["coding"]
    assert therapy["orderDetail"][0]["coding"][0] == {"system": codes.ASAM_LEVEL, "code": "1", "display": "Outpatient"}
    assert support["code"]["coding"][0]["code"] == "H0038"
    assert support["orderDetail"][0]["coding"][0]["code"] == "552"


def test_mental_health_only_programs_can_refer_to_general_support_groups():
    support = plan_for(options=StepDownOptions(support_service_type="224")).referrals[1]
    assert support["orderDetail"][0]["coding"][0] == {"system": codes.SERVICE_TYPE, "code": "224",
                                                      "display": "Support Groups"}


def test_careplan_activities_reference_each_referral_and_schedule_checkins():
    plan = plan_for()
    refs = [a["reference"]["reference"] for a in plan.careplan["activity"] if "reference" in a]
    assert refs == [f"ServiceRequest/{r['id']}" for r in plan.referrals]
    checkin = plan.careplan["activity"][-1]["detail"]
    assert checkin["scheduledTiming"]["event"] == ["2025-03-14", "2025-03-21", "2025-04-04", "2025-05-02", "2025-05-30"]
    assert [c.due for c in plan.checkins] == [date(2025, 3, 14), date(2025, 3, 21), date(2025, 4, 4),
                                              date(2025, 5, 2), date(2025, 5, 30)]


def test_checkin_weeks_are_configurable():
    plan = plan_for(options=StepDownOptions(checkin_weeks=(2, 6), checkin_window_days=5))
    assert [c.due for c in plan.checkins] == [date(2025, 3, 21), date(2025, 4, 18)]
    assert all(c.window_days == 5 for c in plan.checkins)


def test_no_medication_follow_up_without_medication_in_the_iop_plan():
    assert len(plan_for().referrals) == 2


@pytest.mark.parametrize("careplan", [
    iop_plan(note=[{"text": "Continue buprenorphine 16 mg daily"}]),
    iop_plan(activity=[{"detail": {"kind": "MedicationRequest", "status": "in-progress"}}]),
    iop_plan(activity=[{"reference": {"reference": "MedicationRequest/m1"}}]),
    iop_plan(activity=[{"detail": {"status": "completed", "productCodeableConcept": {"text": "naltrexone"}}}]),
    iop_plan(description="Psychiatric medication management with the IOP prescriber"),
])
def test_medication_follow_up_when_the_iop_plan_involves_medication(careplan):
    plan = plan_for(careplan)
    medication = plan.referrals[-1]
    assert medication["id"] == "iop-1-ref-medication"
    assert medication["code"]["coding"][0]["code"] == "395170001"
    assert medication["occurrenceTiming"]["repeat"]["periodUnit"] == "mo"


def test_a_goal_mentioning_medication_also_indicates_it():
    goal = {**iop_goal("g1", "improving"), "description": {"text": "Take medications as prescribed"}}
    assert indicates_medication(iop_plan(), [goal])
    assert not indicates_medication(iop_plan(), [iop_goal("g2", "improving")])


def test_security_label_displays_do_not_count_as_medication_text():
    assert not indicates_medication(iop_plan(meta={"security": [{"display": "medication"}]}), [])


def test_relapse_prevention_goals_are_active_and_due_at_plan_end():
    plan = plan_for()
    assert [g["id"] for g in plan.goals] == ["iop-1-ag-no-return-to-use", "iop-1-ag-relapse-plan",
                                             "iop-1-ag-engagement"]
    for goal in plan.goals:
        assert goal["lifecycleStatus"] == "active"
        assert goal["startDate"] == "2025-03-07"
        assert goal["target"] == [{"dueDate": "2025-05-30"}]
    assert plan.careplan["goal"] == [{"reference": f"Goal/{g['id']}"} for g in plan.goals]


def test_unfinished_iop_goals_are_carried_forward_with_their_predecessor():
    goals = [iop_goal("g-done", "achieved"), iop_goal("g-open", "improving"), iop_goal("g-sustain", "sustaining"),
             iop_goal("g-cancel", "in-progress", lifecycle="cancelled"), iop_goal("g-never", "not-attainable")]
    carried = by_id(plan_for(goals=goals).goals)
    assert {"iop-1-ag-c-g-open", "iop-1-ag-c-g-sustain"} <= carried.keys()
    assert not {"iop-1-ag-c-g-done", "iop-1-ag-c-g-cancel", "iop-1-ag-c-g-never"} & carried.keys()
    goal = carried["iop-1-ag-c-g-open"]
    assert goal["description"] == {"text": "goal g-open"}
    assert goal["target"][0]["detailQuantity"] == {"value": 5, "comparator": "<"}
    assert goal["target"][0]["dueDate"] == "2025-05-30"
    assert goal["extension"][0]["extension"][1]["valueReference"] == {"reference": "Goal/g-open"}
    assert carried["iop-1-ag-c-g-sustain"]["achievementStatus"]["coding"][0]["code"] == "sustaining"


def test_the_same_graduation_rebuilds_identical_resources():
    goals = [iop_goal("g2", "improving"), iop_goal("g1", "no-change")]
    assert plan_for(goals=goals) == plan_for(goals=list(reversed(goals)))


def test_long_goal_ids_stay_valid_fhir_ids():
    goal = iop_goal("g" * 64, "improving")
    carried = plan_for(goals=[goal]).goals[-1]
    assert len(carried["id"]) <= 64
    get_fhir_model_class("Goal").model_validate(carried)


def test_derived_ids_reject_non_fhir_keys():
    with pytest.raises(ValueError):
        StepDownIds.derived("has spaces")


def test_a_plan_without_subject_is_refused():
    with pytest.raises(ValueError):
        plan_for({"resourceType": "CarePlan", "id": "iop-1"})


def test_requester_is_the_iop_plan_author():
    plan = plan_for(iop_plan(author={"reference": "Organization/iop-program"}))
    assert all(r["requester"] == {"reference": "Organization/iop-program"} for r in plan.referrals)
