"""PATCH with a JSON Patch or a FHIRPath Patch, on a service's real app (Flask test client, real store): the
patched resource is validated and written as an update is, with If-Match; a patch that breaks the resource
stores nothing. Also as entries of a batch or transaction."""
from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.test_fhir_conformance import Fhir, assert_outcome
from tests.support.auth import token
from tests.support.examples import minimal

JSON_PATCH = "application/json-patch+json"


@pytest.fixture
def careplan(open_service: Callable[..., Fhir]) -> Fhir:
    return open_service("careplan")


def operation(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    part = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    for name, value in parts.items():
        part.append({"name": name, **value} if isinstance(value, dict) else {"name": name, "valueString": value})
    return {"name": "operation", "part": part}


def fhirpath_patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(operations)}


def versions(fhir: Fhir, path: str) -> int:
    return fhir.get(f"{path}/_history").json["total"]


def test_a_json_patch_changes_the_plan_and_makes_a_new_version(careplan: Fhir) -> None:
    plan = careplan.create(minimal("CarePlan", "alice"))
    path = f"/fhir/CarePlan/{plan['id']}"

    resp = careplan.send("PATCH", path, json.dumps([{"op": "replace", "path": "/title", "value": "Week 2 plan"},
                                                     {"op": "add", "path": "/note", "value": [{"text": "week 1"}]}]),
                         headers={"If-Match": 'W/"1"'}, content_type=JSON_PATCH)

    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.headers["ETag"] == 'W/"2"'
    stored = careplan.get(path).json
    assert stored["title"] == "Week 2 plan" and stored["note"] == [{"text": "week 1"}]
    assert stored["meta"]["versionId"] == "2"


def test_a_fhirpath_patch_adds_replaces_inserts_moves_and_deletes(careplan: Fhir) -> None:
    plan = careplan.create({**minimal("CarePlan", "alice"), "note": [{"text": "a"}, {"text": "b"}]})
    path = f"/fhir/CarePlan/{plan['id']}"
    patch = fhirpath_patch(
        operation("replace", "CarePlan.title", value="Week 2 plan"),
        operation("add", "CarePlan", name="description", value="Twelve weeks of group therapy"),
        operation("insert", "CarePlan.note", value={"valueAnnotation": {"text": "first"}}, index={"valueInteger": 0}),
        operation("move", "CarePlan.note", source={"valueInteger": 2}, destination={"valueInteger": 0}),
        operation("delete", "CarePlan.note.where(text='a')"),
        operation("delete", "CarePlan.period"))  # nothing there: no error

    resp = careplan.send("PATCH", path, patch)

    assert resp.status_code == 200, resp.get_data(as_text=True)
    stored = careplan.get(path).json
    assert stored["title"] == "Week 2 plan"
    assert stored["description"] == "Twelve weeks of group therapy"
    assert [n["text"] for n in stored["note"]] == ["b", "first"]


def test_a_merge_patch_replaces_and_removes_elements(careplan: Fhir) -> None:
    plan = careplan.create({**minimal("CarePlan", "alice"), "note": [{"text": "a"}]})
    path = f"/fhir/CarePlan/{plan['id']}"

    merged = careplan.send("PATCH", path, json.dumps({"title": "Week 2 plan", "note": None}),
                           content_type="application/merge-patch+json")
    as_json = careplan.send("PATCH", path, json.dumps({"description": "Twelve weeks"}), content_type="application/json")

    assert merged.status_code == 200 and as_json.status_code == 200, as_json.get_data(as_text=True)
    stored = careplan.get(path).json
    assert stored["title"] == "Week 2 plan" and "note" not in stored and stored["description"] == "Twelve weeks"
    assert_outcome(careplan.send("PATCH", path, json.dumps({"status": 7}), content_type="application/json"), 422)


def test_a_patch_that_breaks_the_resource_is_422_and_stores_nothing(careplan: Fhir) -> None:
    plan = careplan.create(minimal("CarePlan", "alice"))
    path = f"/fhir/CarePlan/{plan['id']}"
    breaking = [
        ([{"op": "replace", "path": "/status", "value": "finished-maybe"}], JSON_PATCH),
        ([{"op": "remove", "path": "/intent"}], JSON_PATCH),
        ([{"op": "replace", "path": "/id", "value": "other"}], JSON_PATCH),
        ([{"op": "test", "path": "/status", "value": "active"}], JSON_PATCH),
        ([{"op": "replace", "path": "/nothing/here", "value": 1}], JSON_PATCH),
        (fhirpath_patch(operation("replace", "CarePlan.status", value={"valueCode": "nope"})), "application/fhir+json"),
        (fhirpath_patch(operation("replace", "CarePlan.author", value="x")), "application/fhir+json"),  # none
    ]
    for document, media in breaking:
        resp = careplan.send("PATCH", path, json.dumps(document), content_type=media)
        assert_outcome(resp, 422)
    assert versions(careplan, path) == 1


def test_a_malformed_patch_is_400_and_the_wrong_media_type_415(careplan: Fhir) -> None:
    plan = careplan.create(minimal("CarePlan", "alice"))
    path = f"/fhir/CarePlan/{plan['id']}"
    for body, media in (("[{\"op\": \"jump\"}]", JSON_PATCH), ("{}", JSON_PATCH), ("[1]", JSON_PATCH),
                        (json.dumps({"resourceType": "Parameters"}), "application/fhir+json"),
                        ("[]", "application/merge-patch+json"),
                        (json.dumps(fhirpath_patch(operation("explode", "CarePlan"))), "application/fhir+json"),
                        (json.dumps(fhirpath_patch(operation("delete", "CarePlan.where("))), "application/fhir+json")):
        assert_outcome(careplan.send("PATCH", path, body, content_type=media), 400)
    assert_outcome(careplan.send("PATCH", path, "x", content_type="text/plain"), 415)
    assert versions(careplan, path) == 1


def test_patch_honours_if_match_and_needs_the_update_scope(careplan: Fhir) -> None:
    plan = careplan.create(minimal("CarePlan", "alice"))
    path = f"/fhir/CarePlan/{plan['id']}"
    document = json.dumps([{"op": "replace", "path": "/title", "value": "Week 2 plan"}])

    stale = careplan.send("PATCH", path, document, headers={"If-Match": 'W/"7"'}, content_type=JSON_PATCH)
    read_only = careplan.send("PATCH", path, document, content_type=JSON_PATCH,
                              headers={"Authorization": f"Bearer {token('system/CarePlan.rs')}"})
    missing = careplan.send("PATCH", "/fhir/CarePlan/nope", document, content_type=JSON_PATCH)

    assert_outcome(stale, 412)
    assert_outcome(read_only, 403)
    assert_outcome(missing, 404)
    assert versions(careplan, path) == 1


def test_patch_entries_in_a_transaction(careplan: Fhir) -> None:
    plan = careplan.create(minimal("CarePlan", "alice"))
    goal = careplan.create(minimal("Goal", "alice"))
    json_patch = base64.b64encode(json.dumps([{"op": "replace", "path": "/lifecycleStatus",
                                               "value": "active"}]).encode()).decode()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": fhirpath_patch(operation("replace", "CarePlan.title", value="Week 2 plan")),
         "request": {"method": "PATCH", "url": f"CarePlan/{plan['id']}", "ifMatch": 'W/"1"'}},
        {"resource": {"resourceType": "Binary", "contentType": JSON_PATCH, "data": json_patch},
         "request": {"method": "PATCH", "url": f"Goal/{goal['id']}"}}]}

    resp = careplan.post("/fhir", bundle)

    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert [e["response"]["status"] for e in resp.json["entry"]] == ["200 OK", "200 OK"]
    assert careplan.get(f"/fhir/CarePlan/{plan['id']}").json["title"] == "Week 2 plan"
    assert careplan.get(f"/fhir/Goal/{goal['id']}").json["lifecycleStatus"] == "active"
    broken = {**bundle, "entry": [bundle["entry"][1], {**bundle["entry"][0], "request": {
        "method": "PATCH", "url": f"CarePlan/{plan['id']}", "ifMatch": 'W/"1"'}}]}
    assert_outcome(careplan.post("/fhir", broken), 412)
    assert versions(careplan, f"/fhir/Goal/{goal['id']}") == 2  # the transaction's first entry was undone
