"""Bad input at the FHIR REST layer answers 4xx with an OperationOutcome, never 500, and stores nothing.

History parameters, numbers from requests, dates at the calendar's edge, Bundles whose entries cannot be
read, fullUrls and urn:uuid references in batches and transactions: each through the service's real app
on a temporary store (Flask's test client, as tests/integration/test_fhir_conformance.py does).
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.test_fhir_conformance import ALICE, Fhir, assert_outcome
from tests.support.apps import outbox_size
from tests.support.examples import minimal

EDGE_LATE = "9999-12-31T23:59:59-14:00"   # valid FHIR: in UTC it is already the year 10000
EDGE_EARLY = "0001-01-01T00:00:00+14:00"  # valid FHIR: in UTC it is still the year 0
URN = "urn:uuid:6d1d1c2e-7d55-4b7e-9a0e-0a6f5b8f1a{:02d}"


# -- history parameters ---------------------------------------------------------------------------

HISTORY_PATHS = {"intake": ("/fhir/_history", "/fhir/Patient/_history", "/fhir/Patient/{id}/_history"),
                 "careplan": ("/fhir/_history", "/fhir/Goal/_history", "/fhir/Goal/{id}/_history")}
BAD_HISTORY = ["_count=%E2%91%A0", "_count=%D9%A1%D9%A2", "_count=",
               "_count=-3", "_offset=-1", "_count=1_0", "_since=", "_since=yesterday", "_offset=%C2%B2"]


def stored_for_history(fhir: Fhir, service: str) -> str:
    rtype = "Patient" if service == "intake" else "Goal"
    return fhir.create(minimal(rtype, ALICE))["id"]


@pytest.mark.parametrize("service", list(HISTORY_PATHS))
@pytest.mark.parametrize("query", BAD_HISTORY)
def test_a_bad_history_parameter_value_is_400(open_service: Callable[..., Fhir], service: str, query: str) -> None:
    fhir = open_service(service)
    rid = stored_for_history(fhir, service)
    for path in HISTORY_PATHS[service]:
        assert_outcome(fhir.get(path.format(id=rid) + "?" + query), 400, expression=query.split("=")[0])


@pytest.mark.parametrize("service", list(HISTORY_PATHS))
@pytest.mark.parametrize("query", ["_at=2020", "_list=x", "_at=", "colour=blue"])
def test_an_unsupported_history_parameter_is_ignored_or_400_when_strict(open_service: Callable[..., Fhir],
                                                                        service: str, query: str) -> None:
    fhir = open_service(service)
    rid = stored_for_history(fhir, service)
    for path in HISTORY_PATHS[service]:
        url = path.format(id=rid) + "?" + query
        lenient = fhir.get(url)
        assert lenient.status_code == 200, lenient.get_data(as_text=True)
        assert lenient.json["type"] == "history"
        assert query.split("=")[0] not in next(lk["url"] for lk in lenient.json["link"] if lk["relation"] == "self")
        assert_outcome(fhir.get(url, headers={"Prefer": "handling=strict"}), 400, expression=query.split("=")[0])


@pytest.mark.parametrize("service", list(HISTORY_PATHS))
def test_history_since_the_calendar_edges(open_service: Callable[..., Fhir], service: str) -> None:
    fhir = open_service(service)
    rid = stored_for_history(fhir, service)
    for path in HISTORY_PATHS[service]:
        url = path.format(id=rid)
        late = fhir.get(f"{url}?_since={EDGE_LATE}")
        early = fhir.get(f"{url}?_since={EDGE_EARLY.replace('+', '%2B')}")
        assert late.status_code == early.status_code == 200, (late.get_data(), early.get_data())
        assert late.json["total"] == 0
        assert early.json["total"] >= 1
        assert "_count=3&_offset=2" in fhir.get(f"{url}?_count=3&_offset=2").json["link"][0]["url"]


# -- numbers --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["%C2%B2", "%E2%91%A0", "99999999999999999999999", "0", "-1", "%D9%A1"])
def test_a_version_that_is_no_stored_number_is_404(open_service: Callable[..., Fhir], version: str) -> None:
    fhir = open_service("careplan")
    goal = fhir.create(minimal("Goal", ALICE))

    assert_outcome(fhir.get(f"/fhir/Goal/{goal['id']}/_history/{version}"), 404)
    assert fhir.get(f"/fhir/Goal/{goal['id']}/_history/1").json == goal


@pytest.mark.parametrize("etag", ['W/"²"', 'W/"①"', 'W/"١"', 'W/"99999999999999999999999"', 'W/" 1"'])
def test_an_if_match_that_is_no_version_number_is_400(open_service: Callable[..., Fhir], etag: str) -> None:
    fhir = open_service("careplan")
    goal = fhir.create(minimal("Goal", ALICE))

    assert_outcome(fhir.put(f"/fhir/Goal/{goal['id']}", goal, headers={"If-Match": etag}), 400)
    assert fhir.get(f"/fhir/Goal/{goal['id']}").json["meta"]["versionId"] == "1"


@pytest.mark.parametrize("query", ["_count=%E2%91%A0", "_count=%D9%A1%D9%A2", "_offset=%C2%B2", "_count=+5"])
def test_a_search_count_or_offset_in_other_digits_is_400(open_service: Callable[..., Fhir], query: str) -> None:
    assert_outcome(open_service("careplan").get(f"/fhir/Goal?{query}"), 400, expression=query.split("=")[0])


def test_a_huge_count_or_offset_is_capped_not_an_overflow(open_service: Callable[..., Fhir]) -> None:
    fhir = open_service("careplan")
    fhir.create(minimal("Goal", ALICE))
    for query in ("_count=999999999999999999999999", "_offset=999999999999999999999999"):
        assert fhir.get(f"/fhir/Goal?{query}").status_code == 200
        assert fhir.get(f"/fhir/Goal/_history?{query}").status_code == 200


@pytest.mark.parametrize("query", ["lifecycle-status:not=active", "patient:exact=x", "patient:missing=maybe",
                                   "start-date:above=2025", "_id=", "_id=,", "_id:missing=true", "_lastUpdated:x=2025"])
def test_a_modifier_or_value_the_server_does_not_support_is_400(open_service: Callable[..., Fhir], query: str) -> None:
    fhir = open_service("careplan")
    fhir.create(minimal("Goal", ALICE))

    assert_outcome(fhir.get(f"/fhir/Goal?{query}"), 400, expression=query.split("=")[0])
    assert_outcome(fhir.post("/fhir/Goal", minimal("Goal", ALICE), headers={"If-None-Exist": query}), 400)
    assert fhir.history_total("Goal") == 1
    assert fhir.search("Goal", "subject:Patient=" + ALICE)["total"] == 1


@pytest.mark.parametrize("form", ["&".join(["_tag=x"] * 1200), "lifecycle-status=" + ",".join(["a"] * 1200),
                                  "_sort=" + ",".join(["start-date"] * 1200), "_id=" + ",".join(["i"] * 2000)],
                         ids=["criteria", "alternatives", "sort-keys", "ids"])
def test_a_search_too_large_to_run_is_400(open_service: Callable[..., Fhir], form: str) -> None:
    resp = open_service("careplan").post("/fhir/Goal/_search", form, content_type="application/x-www-form-urlencoded")

    assert_outcome(resp, 400, code="too-costly")


# -- dates at the calendar's edge -----------------------------------------------------------------


@pytest.mark.parametrize("instant, day", [(EDGE_LATE, "9999-12-31"), (EDGE_EARLY, "0001-01-01")])
def test_an_encounter_at_the_calendars_edge_is_stored_and_found(open_service: Callable[..., Fhir], instant: str,
                                                                day: str) -> None:
    fhir = open_service("encounters")
    encounter = minimal("Encounter", ALICE)
    encounter["period"] = {"start": instant, "end": instant}

    created = fhir.create(encounter)

    assert created["period"]["start"] == instant
    assert [e["resource"]["id"] for e in fhir.search("Encounter", f"date={day}").get("entry", [])] == [created["id"]]
    escaped = instant.replace("+", "%2B")
    assert fhir.get(f"/fhir/Encounter?_lastUpdated=le{escaped}").status_code == 200
    assert fhir.get(f"/fhir/Encounter?date=ge{escaped}").status_code == 200


def element_paths(node: Any, path: tuple = ()) -> list[tuple]:
    """Every element path of a resource, as key and index steps."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    return [p for key, value in children for p in ((*path, key), *element_paths(value, (*path, key)))]


MUTATIONS = [None, True, 5, 10**30, [], [None], [1], {}, {"x": 1}, "", "x", EDGE_LATE, EDGE_EARLY, "2024"]


def test_an_encounter_with_any_element_broken_is_refused_or_stored_never_a_server_error(
        open_service: Callable[..., Fhir]) -> None:
    fhir = open_service("encounters")
    valid = minimal("Encounter", ALICE)
    for path in element_paths(valid):
        for value in MUTATIONS:
            mutated = copy.deepcopy(valid)
            node = mutated
            for step in path[:-1]:
                node = node[step]
            node[path[-1]] = value
            before = fhir.history_total("Encounter")
            resp = fhir.post("/fhir/Encounter", mutated)
            assert resp.status_code in (201, 400, 409, 422), (path, value, resp.get_data(as_text=True))
            if resp.status_code != 201:
                assert_outcome(resp, resp.status_code)
                assert fhir.history_total("Encounter") == before


# -- Bundles whose entries cannot be read ---------------------------------------------------------

UNREADABLE = {"entry-true": {"entry": True}, "entry-object": {"entry": {"fullUrl": "x"}},
              "entry-number": {"entry": [1]}, "entry-null": {"entry": [None]},
              "request-string": {"entry": [{"request": "x"}]},
              "url-number": {"entry": [{"request": {"method": "GET", "url": 5}}]},
              "resource-number": {"entry": [{"resource": 5, "request": {"method": "POST", "url": "Goal"}}]},
              "second-bad": {"entry": [{"request": {"method": "GET", "url": "AuditEvent"}}, {"request": "x"}]},
              "identifier-string": {"identifier": "x", "entry": [{"request": {"method": "GET", "url": "AuditEvent"}}]},
              "identifier-list": {"identifier": [{"value": "a"}]}}


@pytest.mark.parametrize("service", ["intake", "careplan", "encounters", "aftercare"])
@pytest.mark.parametrize("kind", ["batch", "transaction"])
@pytest.mark.parametrize("case", list(UNREADABLE))
def test_a_bundle_whose_entries_are_not_objects_is_400_at_every_base(open_service: Callable[..., Fhir], service: str,
                                                                     kind: str, case: str) -> None:
    fhir = open_service(service)
    before = fhir.history_total(), outbox_size(fhir)

    outcome = assert_outcome(fhir.post("/fhir", {"resourceType": "Bundle", "type": kind, **UNREADABLE[case]}), 400)

    assert all(i["expression"][0].startswith("Bundle.") for i in outcome["issue"])
    assert (fhir.history_total(), outbox_size(fhir)) == before


def test_a_bundle_of_more_entries_than_the_server_takes_is_413(open_service: Callable[..., Fhir]) -> None:
    fhir = open_service("careplan", max_body_bytes=5 * 1024 * 1024)
    entries = [{"request": {"method": "GET", "url": "Goal"}}] * 10_001

    resp = fhir.post("/fhir", {"resourceType": "Bundle", "type": "batch", "entry": entries})

    assert_outcome(resp, 413, expression="Bundle.entry", code="too-costly")


def goal_entry(n: int, **resource: Any) -> dict[str, Any]:
    goal = {**minimal("Goal", ALICE), **resource}
    return {"fullUrl": URN.format(n), "resource": goal, "request": {"method": "POST", "url": "Goal"}}


def test_a_batch_answers_exactly_one_entry_per_request_entry(open_service: Callable[..., Fhir]) -> None:
    fhir = open_service("careplan")
    entries = [{}, {"request": {}}, {"request": {"method": "POST", "url": "Goal"}},
               {"resource": {"resourceType": "Nope"}, "request": {"method": "POST", "url": "Nope"}},
               {"request": {"method": "GET", "url": "Nope/1"}}, {"request": {"method": "HEAD", "url": "Goal"}},
               {"request": {"method": "GET", "url": f"Goal?start-date={EDGE_LATE}"}},
               {"request": {"method": "GET", "url": "Goal/x/_history/%C2%B2"}},
               {"resource": minimal("Goal", ALICE), "request": {"method": "PUT", "url": "Goal/x", "ifMatch": 'W/"²"'}},
               goal_entry(1, subject={"reference": URN.format(2)}), goal_entry(3)]

    result = fhir.post("/fhir", {"resourceType": "Bundle", "type": "batch", "entry": entries})

    assert result.status_code == 200, result.get_data(as_text=True)
    statuses = [e["response"]["status"] for e in result.json["entry"]]
    assert len(statuses) == len(entries)
    assert statuses[-2:] == ["422", "201 Created"]  # a batch resolves no urn:uuid between its entries
    assert fhir.history_total("Goal") == 1


# -- fullUrls and urn:uuid references (bdl-7, unresolved placeholders, long chains) ---------------


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_two_entries_with_one_full_url_are_400(open_service: Callable[..., Fhir], kind: str) -> None:
    fhir = open_service("careplan")
    before = fhir.history_total(), outbox_size(fhir)

    resp = fhir.post("/fhir", {"resourceType": "Bundle", "type": kind, "entry": [goal_entry(1), goal_entry(1)]})

    assert_outcome(resp, 400, expression="Bundle.entry[1].fullUrl", code="invariant")
    assert (fhir.history_total(), outbox_size(fhir)) == before


def test_a_transaction_reference_to_no_entry_is_422_and_stores_nothing(open_service: Callable[..., Fhir]) -> None:
    fhir = open_service("careplan")
    plan = minimal("CarePlan", ALICE)
    plan["goal"] = [{"reference": URN.format(1)}, {"reference": URN.format(9)}]
    before = fhir.history_total(), outbox_size(fhir)

    resp = fhir.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": plan, "request": {"method": "POST", "url": "CarePlan"}}, goal_entry(1)]})

    assert_outcome(resp, 422, expression="Bundle.entry[0].resource.goal[1].reference")
    assert (fhir.history_total(), outbox_size(fhir)) == before


def test_a_placeholder_reference_outside_a_bundle_is_422(open_service: Callable[..., Fhir]) -> None:
    fhir = open_service("careplan")
    goal = fhir.create(minimal("Goal", ALICE))
    dangling = {**minimal("Goal", ALICE), "subject": {"reference": URN.format(4)}}

    assert_outcome(fhir.post("/fhir/Goal", dangling), 422, expression="Goal.subject.reference")
    assert_outcome(fhir.put(f"/fhir/Goal/{goal['id']}", {**dangling, "id": goal["id"]}), 422)
    assert fhir.history_total("Goal") == 1


def test_a_put_entry_is_referenced_by_its_full_url(open_service: Callable[..., Fhir]) -> None:
    fhir = open_service("careplan")
    plan = minimal("CarePlan", ALICE)
    plan["goal"] = [{"reference": URN.format(1)}]
    put = {"fullUrl": URN.format(1), "resource": {**minimal("Goal", ALICE), "id": "walk-daily"},
           "request": {"method": "PUT", "url": "Goal/walk-daily"}}

    resp = fhir.post("/fhir", {"resourceType": "Bundle", "type": "transaction",
                               "entry": [{"resource": plan, "request": {"method": "POST", "url": "CarePlan"}}, put]})

    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.json["entry"][0]["resource"]["goal"] == [{"reference": "Goal/walk-daily"}]


@pytest.mark.parametrize("length", [1100, 1500])
def test_a_transaction_whose_references_form_a_long_chain_is_stored_in_order(open_service: Callable[..., Fhir],
                                                                             length: int) -> None:
    fhir = open_service("careplan", max_body_bytes=5 * 1024 * 1024)
    entries = []
    for n in range(length):  # each plan is based on the one after it, so the last must be written first
        plan = minimal("CarePlan", ALICE)
        if n + 1 < length:
            plan["basedOn"] = [{"reference": f"urn:uuid:00000000-0000-4000-8000-{n + 1:012d}"}]
        entries.append({"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{n:012d}", "resource": plan,
                        "request": {"method": "POST", "url": "CarePlan"}})

    resp = fhir.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": entries})

    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    results = resp.json["entry"]
    assert len(results) == length
    ids = [e["resource"]["id"] for e in results]
    assert all(e["resource"]["basedOn"] == [{"reference": f"CarePlan/{ids[n + 1]}"}]
               for n, e in enumerate(results[:-1]))
    assert fhir.history_total("CarePlan") == length
