"""US Core 6.1.0 claims and generated narratives on what the suite builds."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta

import pytest

from services.aftercare.step_down import StepDownIds, step_down_plan
from services.careplan.assessment import Assessment
from services.careplan.plan_rules import PlanIds, draft_plan
from services.careplan.progress import with_achievement
from services.encounters.sessions import build_encounter
from services.intake import samples
from services.intake.observations import ObservationContext, recommendation_observation, score_observations
from services.intake.questionnaires import answers_by_link_id
from services.intake.scoring import score_intake
from services.intake.triage import findings_from_intake, recommend_level_of_care
from shared import codes
from shared.fhir import uscore
from shared.fhir.capability import capability_statement
from shared.fhir.registry import Registry, ResourceDef

PATIENT_ID = "pat-7f3a"
CTX = ObservationContext(f"Patient/{PATIENT_ID}", "QuestionnaireResponse/qr-1", "2026-03-02T09:00:00Z")
XHTML = "{http://www.w3.org/1999/xhtml}"


def journey() -> list[dict]:
    """What the suite builds for one patient, from intake to step-down (pure builders, no I/O)."""
    answers = answers_by_link_id(samples.intake_response(f"Patient/{PATIENT_ID}"))
    scores = score_intake(answers, "female")
    observations = score_observations(scores, CTX)
    plan = draft_plan(Assessment(PATIENT_ID, "qr-1", "2.1", "iop", {codes.PHQ9_TOTAL: 11}), date(2026, 3, 2),
                      PlanIds.derived_from("qr-1"))
    start = datetime(2026, 3, 4, 10, tzinfo=UTC)
    session = build_encounter("group", PATIENT_ID, start=start, end=start + timedelta(hours=3), status="finished",
                              encounter_id="enc-1")
    careplan = {**plan.careplan, "author": {"reference": "Practitioner/pr-1"}}
    step_down = step_down_plan(careplan, plan.goals, StepDownIds.derived(careplan["id"]), date(2026, 4, 27))
    return [*observations, plan.careplan, *plan.goals, session, *step_down.resources()]


def test_every_kind_the_suite_builds_claims_its_us_core_profile() -> None:
    claimed = {(r["resourceType"], tuple(r["meta"]["profile"])) for r in journey()}
    assert claimed == {("Observation", (uscore.SCREENING_ASSESSMENT,)), ("CarePlan", (uscore.CAREPLAN,)),
                       ("Goal", (uscore.GOAL,)), ("Encounter", (uscore.ENCOUNTER,)),
                       ("ServiceRequest", (uscore.SERVICE_REQUEST,))}
    assert all(r["meta"]["security"] for r in journey())  # the Part 2 labels stay beside the claim


def test_the_samples_a_partner_sends_claim_us_core_patient_and_questionnaire_response() -> None:
    entries = [e["resource"] for e in samples.partner_submission()["entry"]]
    profiles = {r["resourceType"]: r.get("meta", {}).get("profile") for r in entries}
    assert profiles["Patient"] == [uscore.PATIENT]
    assert profiles["QuestionnaireResponse"] == [uscore.QUESTIONNAIRE_RESPONSE]


def test_the_recommendation_is_not_a_screening_assessment_and_claims_nothing() -> None:
    answers = answers_by_link_id(samples.intake_response(f"Patient/{PATIENT_ID}"))
    findings = findings_from_intake(answers, score_intake(answers, "female"))
    recommendation = recommendation_observation(recommend_level_of_care(findings), findings, CTX)
    assert "profile" not in recommendation["meta"]


def test_screening_scores_name_the_patient_as_performer_of_the_self_report() -> None:
    for observation in journey()[:3]:
        assert observation["performer"] == [{"reference": f"Patient/{PATIENT_ID}"}]


@pytest.mark.parametrize("resource", journey(), ids=lambda r: f"{r['resourceType']}-{r.get('id', 'new')}")
def test_every_built_resource_has_a_generated_xhtml_narrative_that_names_no_patient(resource: dict) -> None:
    text = resource["text"]
    assert text["status"] == "generated"
    root = ET.fromstring(text["div"])
    assert root.tag == f"{XHTML}div" and "".join(root.itertext()).strip()
    assert PATIENT_ID not in text["div"] and "Patient/" not in text["div"]


def test_the_narrative_says_what_the_resource_says() -> None:
    phq9 = next(o for o in journey() if o["code"]["coding"][0]["code"] == codes.PHQ9_TOTAL)
    words = "".join(ET.fromstring(phq9["text"]["div"]).itertext())
    assert str(phq9["valueInteger"]) in words and phq9["effectiveDateTime"] in words and "final" in words
    session = next(r for r in journey() if r["resourceType"] == "Encounter")
    assert "Group psychotherapy: finished" in session["text"]["div"]


def test_markup_in_what_a_narrative_quotes_is_escaped() -> None:
    goal = uscore.narrate({"resourceType": "Goal", "lifecycleStatus": "active",
                           "description": {"text": "<script>alert(1)</script> & more"}})
    assert "<script>" not in goal["text"]["div"] and "&lt;script&gt;" in goal["text"]["div"]
    ET.fromstring(goal["text"]["div"])


def test_a_write_refreshes_a_generated_narrative_when_the_resource_changes() -> None:
    goal = next(r for r in journey() if r["resourceType"] == "Goal")
    achieved = with_achievement(goal, "achieved")
    assert "In Progress" in achieved["text"]["div"]  # stale until written
    uscore.refresh_narrative(None, achieved, None)
    assert "Achieved" in achieved["text"]["div"] and "In Progress" not in achieved["text"]["div"]


def test_a_narrative_a_client_wrote_and_resources_that_claim_nothing_are_left_alone() -> None:
    goal = next(r for r in journey() if r["resourceType"] == "Goal")
    authored = {**goal, "text": {"status": "additional", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}}
    uscore.refresh_narrative(None, authored, None)
    assert authored["text"]["status"] == "additional"
    unclaimed = {k: v for k, v in goal.items() if k not in ("meta", "text")}
    uscore.refresh_narrative(None, unclaimed, None)
    assert "text" not in unclaimed


def test_claiming_twice_adds_the_profile_once_and_keeps_the_rest_of_meta() -> None:
    resource = {"resourceType": "Goal", "meta": {"security": [{"code": "R"}]}}
    uscore.claim(uscore.claim(resource, uscore.GOAL), uscore.GOAL)
    assert resource["meta"] == {"security": [{"code": "R"}], "profile": [uscore.GOAL]}


def test_the_capability_statement_lists_the_supported_profiles_and_the_guide() -> None:
    registry = Registry("careplan")
    for rtype in ("CarePlan", "Goal", "EpisodeOfCare"):
        registry.add(ResourceDef(rtype))
    statement = capability_statement(registry, "http://localhost/fhir", "1")
    served = {r["type"]: r.get("supportedProfile") for r in statement["rest"][0]["resource"]}
    assert served["CarePlan"] == [uscore.CAREPLAN] and served["Goal"] == [uscore.GOAL]
    assert served["EpisodeOfCare"] is None and served["AuditEvent"] is None
    assert statement["implementationGuide"] == [uscore.IMPLEMENTATION_GUIDE]
