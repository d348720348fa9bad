"""Operations take only the Parameters they declare, run on GET only when they change nothing, and never 500:
$graduate (with every official HL7 CarePlan example), $record-group-attendance, $sweep-checkins, $resend,
$events, $status (instance and type level, within the organisation binding) and $validate."""
from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.auth import mint
from tests.integration.test_fhir_conformance import ALICE, Fhir, assert_outcome
from tests.support.apps import outbox_size
from tests.support.auth import TEST_SECRET
from tests.support.examples import minimal

HL7_CAREPLANS = sorted((Path(__file__).parent.parent / "support" / "hl7").glob("CarePlan-*.json"))
OVERRIDE = {"resourceType": "Parameters", "parameter": [{"name": "override-reason", "valueString": "seen weekly"}]}


def parameters(*items: Any) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(items)}


# -- malformed Parameters: 400, nothing stored, no event ------------------------------------------

MALFORMED = {"not-a-list": {"resourceType": "Parameters", "parameter": "x"},
             "null-item": {"resourceType": "Parameters", "parameter": [None]},
             "number-item": {"resourceType": "Parameters", "parameter": [1]},
             "no-name": parameters({"valueString": "x"}),
             "number-name": parameters({"name": 5, "valueString": "x"}),
             "unknown-name": parameters({"name": "colour", "valueString": "blue"}),
             "two-values": parameters({"name": "x", "valueString": "a", "valueInteger": 1}),
             "not-parameters": {"resourceType": "Basic", "code": {"text": "x"}}}
OPERATIONS = {"graduate": ("careplan", "/fhir/CarePlan/{id}/$graduate"),
              "record-group-attendance": ("encounters", "/fhir/Encounter/$record-group-attendance"),
              "sweep-checkins": ("aftercare", "/fhir/CarePlan/$sweep-checkins"),
              "resend": ("aftercare", "/fhir/Subscription/{id}/$resend"),
              "events": ("aftercare", "/fhir/Subscription/{id}/$events"),
              "validate": ("careplan", "/fhir/Task/$validate")}
WRONG_TYPES = {"graduate": parameters({"name": "override-reason", "valueInteger": 5}),
               "record-group-attendance": parameters({"name": "group", "valueString": "g"},
                                                     {"name": "start", "valueDateTime": "2025-03-10T15:00:00Z"},
                                                     {"name": "end", "valueDateTime": "2025-03-10T18:00:00Z"},
                                                     {"name": "attendee", "valueString": "Patient/alice"}),
               "sweep-checkins": parameters({"name": "date", "valueString": "2025-03-10"}),
               "resend": parameters({"name": "eventsSinceNumber", "valueBoolean": True}),
               "events": parameters({"name": "content", "valueString": "full-resource"}),
               "validate": parameters({"name": "resource", "resource": minimal("Task", ALICE)},
                                      {"name": "mode", "valueString": "create"})}


def target(fhir: Fhir, operation: str) -> str:
    """The operation's URL on a fresh service, with a resource for an instance-level one to act on."""
    service, path = OPERATIONS[operation]
    if "{id}" not in path:
        return path
    rtype = "CarePlan" if service == "careplan" else "Subscription"
    return path.format(id=fhir.create(minimal(rtype, ALICE))["id"])


@pytest.mark.parametrize("operation, case", [(op, case) for op in OPERATIONS for case in [*MALFORMED, "wrong-type"]
                                             if (op, case) != ("validate", "not-parameters")])  # its body: the resource
def test_malformed_operation_parameters_are_400_and_change_nothing(open_service: Callable[..., Fhir], operation: str,
                                                                   case: str) -> None:
    fhir = open_service(OPERATIONS[operation][0])
    url = target(fhir, operation)
    before = fhir.history_total(), outbox_size(fhir)

    assert_outcome(fhir.post(url, WRONG_TYPES[operation] if case == "wrong-type" else MALFORMED[case]), 400)

    assert (fhir.history_total(), outbox_size(fhir)) == before


def test_a_required_parameter_missing_or_repeated_is_400(open_service: Callable[..., Fhir]) -> None:
    fhir = open_service("encounters")
    attendee = {"name": "attendee", "part": [{"name": "patient", "valueReference": {"reference": "Patient/a"}},
                                             {"name": "attendance", "valueCode": "attended"}]}
    twice = parameters({"name": "group", "valueString": "g"}, {"name": "group", "valueString": "h"},
                       {"name": "start", "valueDateTime": "2025-03-10T15:00:00Z"},
                       {"name": "end", "valueDateTime": "2025-03-10T18:00:00Z"}, attendee)

    assert_outcome(fhir.post("/fhir/Encounter/$record-group-attendance", None), 400,
                   expression="Parameters.parameter.where(name='group')")
    assert_outcome(fhir.post("/fhir/Encounter/$record-group-attendance", twice), 400,
                   expression="Parameters.parameter.where(name='group')")
    assert fhir.history_total() == 0


@pytest.mark.parametrize("number", ["999999999999999999999", "%C2%B2", "%E2%91%A0", "-1", ""])
def test_an_event_number_that_is_no_stored_number_is_400(open_service: Callable[..., Fhir], number: str) -> None:
    fhir = open_service("aftercare")
    url = target(fhir, "events")

    assert_outcome(fhir.get(f"{url}?eventsSinceNumber={number}"), 400, expression="eventsSinceNumber")
    assert_outcome(fhir.post(url.replace("$events", "$resend"),
                             parameters({"name": "eventsUntilNumber", "valueString": number or " "})), 400)
    assert fhir.get(f"{url}?eventsSinceNumber=1").status_code == 200


# -- GET only for operations that change nothing --------------------------------------------------


@pytest.mark.parametrize("operation", ["graduate", "record-group-attendance", "sweep-checkins", "resend"])
def test_an_operation_that_changes_state_is_405_on_get(open_service: Callable[..., Fhir], operation: str) -> None:
    fhir = open_service(OPERATIONS[operation][0])
    url = target(fhir, operation)
    before = fhir.history_total(), outbox_size(fhir)

    resp = fhir.get(url)

    assert_outcome(resp, 405, code="not-supported")
    assert resp.headers["Allow"] == "POST"
    assert (fhir.history_total(), outbox_size(fhir)) == before


def test_operations_that_change_nothing_still_answer_get(open_service: Callable[..., Fhir]) -> None:
    fhir = open_service("aftercare")
    sub = fhir.create(minimal("Subscription", ALICE))["id"]

    for path in ("/fhir/Subscription/$topic-list", f"/fhir/Subscription/{sub}/$status",
                 f"/fhir/Subscription/{sub}/$events", f"/fhir/Subscription/$status?id={sub}"):
        assert fhir.get(path).status_code == 200, path
    assert_outcome(fhir.get(f"/fhir/Subscription/{sub}/$status?colour=blue"), 400, expression="colour")
    assert_outcome(fhir.get(f"/fhir/Subscription/{sub}/$events?content=everything"), 400, expression="content")


# -- $graduate on every CarePlan the service accepts ----------------------------------------------


def official(path: Path) -> dict[str, Any]:
    plan = json.loads(path.read_text())
    plan["status"] = "active"
    return plan


@pytest.mark.parametrize("example", HL7_CAREPLANS, ids=lambda p: p.stem)
def test_graduation_of_each_official_careplan_example_answers_without_a_server_error(
        open_service: Callable[..., Fhir], example: Path) -> None:
    fhir = open_service("careplan")
    plan = official(example)
    assert fhir.put(f"/fhir/CarePlan/{plan['id']}", plan).status_code == 201

    refused = fhir.post(f"/fhir/CarePlan/{plan['id']}/$graduate", None)
    graduated = fhir.post(f"/fhir/CarePlan/{plan['id']}/$graduate", OVERRIDE)

    assert_outcome(refused, 422, code="business-rule")
    assert graduated.status_code == 200, graduated.get_data(as_text=True)
    assert graduated.json["status"] == "completed"
    assert fhir.get(f"/fhir/CarePlan/{plan['id']}").json["status"] == "completed"


@pytest.mark.parametrize("start", ["2024", "2024-02", "2024-02-29T23:30:00-14:00"])
def test_a_partial_period_start_counts_the_stay_from_its_latest_day(open_service: Callable[..., Fhir],
                                                                    start: str) -> None:
    fhir = open_service("careplan")
    plan = official(HL7_CAREPLANS[0])
    plan["period"] = {"start": start}
    fhir.put(f"/fhir/CarePlan/{plan['id']}", plan)

    refused = fhir.post(f"/fhir/CarePlan/{plan['id']}/$graduate", None)

    assert all("weeks" not in i["diagnostics"] for i in refused.json["issue"])  # well over six weeks ago
    assert fhir.post(f"/fhir/CarePlan/{plan['id']}/$graduate", OVERRIDE).status_code == 200


# -- Subscriptions: endpoint, type-level $status ---------------------------------------------------


@pytest.mark.parametrize("endpoint", ["http://[::1", "https://ehr.example.org:99999/fhir", "http://ehr:port/x"])
def test_a_subscription_endpoint_that_is_no_url_is_422(open_service: Callable[..., Fhir], endpoint: str) -> None:
    fhir = open_service("aftercare")
    sub = minimal("Subscription", ALICE)
    sub["channel"]["endpoint"] = endpoint

    assert_outcome(fhir.post("/fhir/Subscription", sub), 422, expression="Subscription.channel.endpoint")
    assert fhir.history_total("Subscription") == 0


def subscription_for(fhir: Fhir, organization: str) -> str:
    sub = minimal("Subscription", ALICE)
    sub["extension"] = [{"url": "https://iop-suite.org/fhir/StructureDefinition/subscription-recipient",
                         "valueReference": {"reference": organization}}]
    return fhir.create(sub)["id"]


def as_organization(organization: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(TEST_SECRET, 'system/*.cruds', organization=organization)}"}


def status_ids(bundle: dict[str, Any]) -> list[str]:
    return [p["valueReference"]["reference"].rsplit("/", 1)[-1] for e in bundle.get("entry", [])
            for p in e["resource"]["parameter"] if p["name"] == "subscription"]


def test_type_level_status_answers_for_each_named_subscription(open_service: Callable[..., Fhir]) -> None:
    fhir = open_service("aftercare")
    first, second = subscription_for(fhir, "Organization/a"), subscription_for(fhir, "Organization/b")

    both = fhir.get(f"/fhir/Subscription/$status?id={first}&id={second}")
    comma = fhir.get(f"/fhir/Subscription/$status?id={second},{first}")
    every = fhir.get("/fhir/Subscription/$status")

    assert both.status_code == comma.status_code == every.status_code == 200
    assert both.json["type"] == "searchset" and both.json["total"] == 2
    assert status_ids(both.json) == [first, second]
    assert status_ids(comma.json) == [second, first]
    assert sorted(status_ids(every.json)) == sorted([first, second])
    assert fhir.get(f"/fhir/Subscription/$status?id={first}&status=active").json["total"] == 0
    assert_outcome(fhir.get(f"/fhir/Subscription/$status?id={first}&id=nobody"), 404)
    assert_outcome(fhir.get("/fhir/Subscription/$status?id=%C2%B2"), 400, expression="id")


def test_type_level_status_keeps_to_the_callers_organisation(open_service: Callable[..., Fhir]) -> None:
    fhir = open_service("aftercare")
    own, other = subscription_for(fhir, "Organization/a"), subscription_for(fhir, "Organization/b")
    client = as_organization("Organization/a")

    assert_outcome(fhir.get(f"/fhir/Subscription/$status?id={own}&id={other}", headers=client), 403)
    assert_outcome(fhir.get(f"/fhir/Subscription/{other}/$status", headers=client), 403)
    assert status_ids(fhir.get(f"/fhir/Subscription/$status?id={own}", headers=client).json) == [own]
    assert status_ids(fhir.get("/fhir/Subscription/$status", headers=client).json) == [own]


# -- $validate ------------------------------------------------------------------------------------


def test_validate_reads_mode_and_profile_and_refuses_a_malformed_request(open_service: Callable[..., Fhir]) -> None:
    fhir = open_service("careplan")
    task = minimal("Task", ALICE)
    wrapped = parameters({"name": "resource", "resource": task}, {"name": "mode", "valueCode": "update"})

    update = fhir.post("/fhir/Task/$validate", wrapped)
    profiled = fhir.post("/fhir/Task/$validate?profile=http://example.org/StructureDefinition/other-task", task)
    base = fhir.post("/fhir/Task/$validate?mode=create&profile=http://hl7.org/fhir/StructureDefinition/Task", task)

    assert update.status_code == 200
    assert [i["expression"] for i in update.json["issue"] if i["severity"] == "error"] == [["Task.id"]]
    assert {i["severity"] for i in profiled.json["issue"]} == {"warning", "information"}
    assert {i["severity"] for i in base.json["issue"]} == {"information"}
    assert_outcome(fhir.post("/fhir/Task/$validate?mode=sideways", task), 400, expression="mode")
    assert_outcome(fhir.post("/fhir/Task/$validate?colour=blue", task), 400, expression="colour")
    assert_outcome(fhir.post("/fhir/Task/$validate", parameters({"name": "mode", "valueCode": "create"})), 400)
    assert_outcome(fhir.post("/fhir/Task/$validate", parameters({"name": "resource", "resource": 5})), 400)
    assert_outcome(fhir.post("/fhir/Nope/$validate", task), 404)
    invalid = copy.deepcopy(task)
    invalid["status"] = "sideways"
    reported = fhir.post("/fhir/Task/$validate", parameters({"name": "resource", "resource": invalid}))
    assert reported.status_code == 200
    assert [i["expression"] for i in reported.json["issue"] if i["severity"] == "error"] == [["Task.status"]]
