"""What a searchset carries beyond its matches and how it is shaped: _include and _revinclude (with :iterate),
chained parameters, _has, _summary, _elements and _total, on the services' real apps (Flask test client, real
store), with the scope and partner rules that apply to every resource they reach."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.test_fhir_conformance import Fhir, assert_outcome
from tests.support.auth import token
from tests.support.examples import PARTNER_MRN, minimal

STRICT = {"Prefer": "handling=strict"}
SUBSETTED = "SUBSETTED"


def kinds(bundle: dict[str, Any]) -> dict[str, set[str]]:
    """The `Type/id`s of a searchset by search mode."""
    out: dict[str, set[str]] = {}
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        out.setdefault(entry["search"]["mode"], set()).add(f"{resource['resourceType']}/{resource['id']}")
    return out


def as_caller(fhir: Fhir, scopes: str, partner: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(scopes, partner)}"}


@pytest.fixture
def careplan(open_service: Callable[..., Fhir]) -> Fhir:
    return open_service("careplan")


@pytest.fixture
def intake(open_service: Callable[..., Fhir]) -> Fhir:
    return open_service("intake")


def plan_with_goals(fhir: Fhir, patient: str, n: int = 2) -> tuple[dict, list[dict]]:
    goals = [fhir.create(minimal("Goal", patient)) for _ in range(n)]
    plan = fhir.create({**minimal("CarePlan", patient), "goal": [{"reference": f"Goal/{g['id']}"} for g in goals]})
    return plan, goals


def test_include_adds_the_goals_of_the_plans_found_as_includes(careplan: Fhir) -> None:
    plan, goals = plan_with_goals(careplan, "alice")
    plan_with_goals(careplan, "bob")

    bundle = careplan.search("CarePlan", "patient=alice&_include=CarePlan:goal")

    assert kinds(bundle) == {"match": {f"CarePlan/{plan['id']}"}, "include": {f"Goal/{g['id']}" for g in goals}}
    assert bundle["total"] == 1  # includes are not counted
    assert "_include=CarePlan%3Agoal" in bundle["link"][0]["url"]


def test_revinclude_adds_what_refers_to_the_matches_and_iterate_follows_on(careplan: Fhir) -> None:
    plan, goals = plan_with_goals(careplan, "alice")
    task = careplan.create({**minimal("Task", "alice"), "focus": {"reference": f"CarePlan/{plan['id']}"}})

    once = careplan.search("Goal", f"_id={goals[0]['id']}&_revinclude=CarePlan:goal")
    iterated = careplan.search("Goal", f"_id={goals[0]['id']}&_revinclude=CarePlan:goal"
                                       f"&_revinclude:iterate=Task:focus&_include:iterate=CarePlan:goal")

    assert kinds(once) == {"match": {f"Goal/{goals[0]['id']}"}, "include": {f"CarePlan/{plan['id']}"}}
    assert kinds(iterated)["include"] == {f"CarePlan/{plan['id']}", f"Task/{task['id']}", f"Goal/{goals[1]['id']}"}


def test_an_include_the_service_cannot_follow_is_ignored_or_400_when_strict(careplan: Fhir) -> None:
    plan_with_goals(careplan, "alice")
    for value in ("CarePlan:status", "Encounter:subject", "CarePlan:*", "Goal:subject"):
        lenient = careplan.search("CarePlan", f"_include={value}")
        assert set(kinds(lenient)) == {"match"}, value
        assert_outcome(careplan.get(f"/fhir/CarePlan?_include={value}", headers=STRICT), 400, code="not-supported")
    assert_outcome(careplan.get("/fhir/CarePlan?_include:deep=CarePlan:goal"), 400)


def test_an_included_type_needs_the_callers_read_scope(careplan: Fhir) -> None:
    plan_with_goals(careplan, "alice")
    narrow = as_caller(careplan, "system/CarePlan.rs")

    assert careplan.get("/fhir/CarePlan?patient=alice", headers=narrow).status_code == 200
    assert_outcome(careplan.get("/fhir/CarePlan?_include=CarePlan:goal", headers=narrow), 403, code="forbidden")
    assert_outcome(careplan.get("/fhir/Goal?_revinclude=CarePlan:goal",
                                headers=as_caller(careplan, "system/Goal.rs")), 403)
    assert_outcome(careplan.get("/fhir/CarePlan?goal:Goal.lifecycle-status=active", headers=narrow), 403)


def test_what_an_include_reaches_that_the_scopes_do_not_allow_is_left_out(intake: Fhir) -> None:
    patient = intake.create(minimal("Patient", "hal"))
    group = intake.create(minimal("Group", patient["id"]))
    about_patient = intake.create(minimal("Observation", patient["id"]))
    about_group = intake.create({**minimal("Observation", "x"), "subject": {"reference": f"Group/{group['id']}"}})
    no_groups = as_caller(intake, "system/Observation.rs system/Patient.rs")

    narrow = intake.get("/fhir/Observation?_include=Observation:subject", headers=no_groups).json
    whole = intake.get("/fhir/Observation?_include=Observation:subject").json

    assert kinds(narrow) == {"match": {f"Observation/{about_patient['id']}", f"Observation/{about_group['id']}"},
                             "include": {f"Patient/{patient['id']}"}}
    assert kinds(whole)["include"] == {f"Patient/{patient['id']}", f"Group/{group['id']}"}
    assert_outcome(intake.get("/fhir/Patient?_revinclude=Group:member", headers=no_groups), 403)


def test_a_chained_parameter_finds_by_what_the_reference_points_at(careplan: Fhir, intake: Fhir) -> None:
    active_goal = careplan.create({**minimal("Goal", "alice"), "lifecycleStatus": "active"})
    done_goal = careplan.create({**minimal("Goal", "bob"), "lifecycleStatus": "completed"})
    with_active = careplan.create({**minimal("CarePlan", "alice"),
                                   "goal": [{"reference": f"Goal/{active_goal['id']}"}]})
    careplan.create({**minimal("CarePlan", "bob"), "goal": [{"reference": f"Goal/{done_goal['id']}"}]})
    patient = intake.create(minimal("Patient", "carol"))
    observation = intake.create(minimal("Observation", patient["id"]))
    intake.create(minimal("Observation", "someone-else"))

    by_goal = careplan.search("CarePlan", "goal:Goal.lifecycle-status=active")
    untyped = careplan.search("CarePlan", f"goal._id={active_goal['id']}")
    by_patient = intake.search("Observation", f"subject:Patient.identifier={PARTNER_MRN}|MRN-carol")
    by_name = intake.search("Observation", "patient.family:exact=rivera")

    assert kinds(by_goal)["match"] == {f"CarePlan/{with_active['id']}"}
    assert kinds(untyped)["match"] == {f"CarePlan/{with_active['id']}"}
    assert kinds(by_patient)["match"] == {f"Observation/{observation['id']}"}
    assert kinds(by_name)["match"] == {f"Observation/{observation['id']}"}


def test_a_chain_the_service_cannot_follow_is_ignored_or_400_when_strict(careplan: Fhir) -> None:
    careplan.create(minimal("CarePlan", "alice"))
    for key in ("subject:Patient.identifier", "goal.subject.name", "status.x", "goal:Goal.nothing"):
        assert careplan.search("CarePlan", f"{key}=x")["total"] == 1, key
        assert_outcome(careplan.get(f"/fhir/CarePlan?{key}=x", headers=STRICT), 400, code="not-supported")


def test_has_finds_the_resources_that_others_refer_to(intake: Fhir) -> None:
    scored = intake.create(minimal("Patient", "dana"))
    unscored = intake.create(minimal("Patient", "eve"))
    intake.create(minimal("Observation", scored["id"]))
    code = minimal("Observation", "x")["code"]["coding"][0]

    found = intake.search("Patient", f"_has:Observation:subject:code={code['system']}|{code['code']}")
    nothing = intake.search("Patient", "_has:Observation:subject:code=no-such-code")

    assert kinds(found)["match"] == {f"Patient/{scored['id']}"}
    assert f"Patient/{unscored['id']}" not in kinds(found)["match"]
    assert nothing["total"] == 0
    assert_outcome(intake.get("/fhir/Patient?_has:Observation:subject:_has:Flag:subject:status=active=x",
                              headers=STRICT), 400)
    assert_outcome(intake.get("/fhir/Patient?_has:Observation:subject:code=x",
                              headers=as_caller(intake, "system/Patient.rs")), 403)


def test_a_partner_never_reaches_another_partners_resources_through_chains_has_or_includes(intake: Fhir) -> None:
    mine = as_caller(intake, "system/*.cruds", partner="north")
    theirs = as_caller(intake, "system/*.cruds", partner="south")
    patient = intake.post("/fhir/Patient", minimal("Patient", "fay"), headers=theirs).json
    intake.post("/fhir/Observation", minimal("Observation", patient["id"]), headers=theirs)
    own_patient = intake.post("/fhir/Patient", minimal("Patient", "gus"), headers=mine).json
    own = intake.post("/fhir/Observation", minimal("Observation", own_patient["id"]), headers=mine).json

    chained = intake.get("/fhir/Observation?patient.family=rivera", headers=mine).json
    untyped = intake.get(f"/fhir/Observation?subject.identifier={PARTNER_MRN}|MRN-gus", headers=mine).json
    has = intake.get("/fhir/Patient?_has:Observation:subject:status=final", headers=mine).json
    revinclude = intake.get("/fhir/Observation?_include=Observation:subject", headers=mine).json

    assert kinds(chained)["match"] == {f"Observation/{own['id']}"}
    assert kinds(untyped)["match"] == {f"Observation/{own['id']}"}  # Groups, which partners may not see, aside
    assert_outcome(intake.get("/fhir/Observation?subject:Group.identifier=x", headers=mine), 403)
    assert kinds(has)["match"] == {f"Patient/{own_patient['id']}"}
    assert kinds(revinclude)["include"] == {f"Patient/{own_patient['id']}"}


def test_summary_and_elements_shape_the_matches_and_tag_them_subsetted(careplan: Fhir) -> None:
    plan, goals = plan_with_goals(careplan, "alice")

    summary = careplan.search("CarePlan", "_summary=true")["entry"][0]["resource"]
    text = careplan.search("CarePlan", "_summary=text")["entry"][0]["resource"]
    data = careplan.search("CarePlan", "_summary=data")["entry"][0]["resource"]
    count = careplan.search("CarePlan", "_summary=count")
    elements = careplan.search("CarePlan", "_elements=status,CarePlan.subject&_include=CarePlan:goal")

    assert "goal" not in summary and summary["status"] == "draft" and summary["subject"]
    assert set(text) <= {"resourceType", "id", "meta", "text", "status", "intent"}
    assert "text" not in data and data["goal"]
    assert count["total"] == 1 and "entry" not in count
    match = next(e["resource"] for e in elements["entry"] if e["search"]["mode"] == "match")
    assert set(match) == {"resourceType", "id", "meta", "status", "subject"}
    assert SUBSETTED in {t["code"] for t in match["meta"]["tag"]}
    included = [e["resource"] for e in elements["entry"] if e["search"]["mode"] == "include"]
    assert {g["id"] for g in included} == {g["id"] for g in goals} and all("lifecycleStatus" in g for g in included)
    assert careplan.get(f"/fhir/CarePlan/{plan['id']}").json["goal"]  # the stored resource is whole
    read = careplan.get(f"/fhir/CarePlan/{plan['id']}?_elements=goal").json
    assert set(read) == {"resourceType", "id", "meta", "goal"}
    assert "goal" not in careplan.get(f"/fhir/CarePlan/{plan['id']}?_summary=true").json


def test_bad_summary_elements_and_total_are_400(careplan: Fhir) -> None:
    for query in ("_summary=maybe", "_elements=nothing", "_elements=", "_total=some",
                  "_summary=true&_elements=status"):
        assert_outcome(careplan.get(f"/fhir/CarePlan?{query}", headers=STRICT), 400)
    assert careplan.get("/fhir/CarePlan?_summary=true&_elements=status").status_code == 200  # _elements wins


def test_total_none_leaves_the_count_out_but_pages_on(careplan: Fhir) -> None:
    for _ in range(3):
        careplan.create(minimal("CarePlan", "alice"))

    first = careplan.search("CarePlan", "_total=none&_count=2")
    second = careplan.follow(next(lk["url"] for lk in first["link"] if lk["relation"] == "next")).json
    accurate = careplan.search("CarePlan", "_total=accurate&_count=2")

    assert "total" not in first and len(first["entry"]) == 2
    assert len(second["entry"]) == 1 and not any(lk["relation"] == "next" for lk in second["link"])
    assert accurate["total"] == 3
