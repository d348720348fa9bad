"""Conditional update (`PUT Type?criteria`) and conditional delete (`DELETE Type?criteria`) on a service's real app:
no match creates (update) or does nothing (delete), one match is changed, several are 412 and change nothing."""
from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.test_fhir_conformance import Fhir, assert_outcome
from tests.support.auth import token
from tests.support.examples import PARTNER_MRN, minimal


@pytest.fixture
def intake(open_service: Callable[..., Fhir]) -> Fhir:
    return open_service("intake")


@pytest.fixture
def careplan(open_service: Callable[..., Fhir]) -> Fhir:
    return open_service("careplan")


def patient(mrn: str, family: str = "Rivera") -> dict:
    return {**minimal("Patient", mrn), "name": [{"family": family}]}


def test_a_conditional_update_creates_then_updates_the_one_match(intake: Fhir) -> None:
    criteria = f"identifier={PARTNER_MRN}|MRN-dana"

    created = intake.put(f"/fhir/Patient?{criteria}", patient("dana"))
    updated = intake.put(f"/fhir/Patient?{criteria}", patient("dana", "Diaz"), headers={"If-Match": 'W/"1"'})

    assert created.status_code == 201, created.get_data(as_text=True)
    assert updated.status_code == 200, updated.get_data(as_text=True)
    assert updated.json["id"] == created.json["id"]
    assert updated.json["meta"]["versionId"] == "2" and updated.json["name"] == [{"family": "Diaz"}]
    assert intake.search("Patient", criteria)["total"] == 1


def test_a_conditional_update_matching_several_is_412_and_changes_nothing(careplan: Fhir) -> None:
    plans = [careplan.create(minimal("CarePlan", "alice")) for _ in range(2)]

    resp = careplan.put("/fhir/CarePlan?patient=alice", {**minimal("CarePlan", "alice"), "title": "changed"})

    assert_outcome(resp, 412)
    assert all(careplan.get(f"/fhir/CarePlan/{p['id']}").json["meta"]["versionId"] == "1" for p in plans)


def test_a_conditional_update_refuses_an_id_that_is_not_the_matchs(careplan: Fhir) -> None:
    plan = careplan.create(minimal("CarePlan", "alice"))
    other = careplan.create(minimal("CarePlan", "bob"))

    wrong_id = careplan.put("/fhir/CarePlan?patient=alice", {**minimal("CarePlan", "alice"), "id": "not-it"})
    taken = careplan.put("/fhir/CarePlan?patient=carol", {**minimal("CarePlan", "carol"), "id": other["id"]})

    assert_outcome(wrong_id, 400)
    assert_outcome(taken, 409)
    assert careplan.get(f"/fhir/CarePlan/{plan['id']}").json["meta"]["versionId"] == "1"
    assert careplan.get(f"/fhir/CarePlan/{other['id']}").json["subject"]["reference"] == "Patient/bob"


def test_bad_conditional_criteria_are_400_and_a_put_without_any_405(careplan: Fhir) -> None:
    assert_outcome(careplan.put("/fhir/CarePlan?bogus=1", minimal("CarePlan", "alice")), 400)
    assert_outcome(careplan.put("/fhir/CarePlan", minimal("CarePlan", "alice")), 405)
    assert_outcome(careplan.delete("/fhir/CarePlan?_count=5"), 412)  # criteria that select nothing
    assert_outcome(careplan.delete("/fhir/CarePlan"), 405)
    assert careplan.search("CarePlan")["total"] == 0


def test_a_conditional_delete_deletes_a_single_match_only(careplan: Fhir) -> None:
    alice = careplan.create(minimal("CarePlan", "alice"))
    bobs = [careplan.create(minimal("CarePlan", "bob")) for _ in range(2)]

    single = careplan.delete("/fhir/CarePlan?patient=alice")
    none = careplan.delete("/fhir/CarePlan?patient=nobody")
    several = careplan.delete("/fhir/CarePlan?patient=bob")

    assert single.status_code == 204 and none.status_code == 204
    assert careplan.get(f"/fhir/CarePlan/{alice['id']}").status_code == 410
    assert_outcome(several, 412)
    assert all(careplan.get(f"/fhir/CarePlan/{p['id']}").status_code == 200 for p in bobs)


def test_conditional_writes_need_their_scopes_and_work_in_a_transaction(careplan: Fhir) -> None:
    careplan.create(minimal("CarePlan", "alice"))
    update_only = {"Authorization": f"Bearer {token('system/CarePlan.rsu')}"}

    assert_outcome(careplan.delete("/fhir/CarePlan?patient=alice", headers=update_only), 403)
    assert_outcome(careplan.put("/fhir/CarePlan?patient=carol", minimal("CarePlan", "carol"), headers=update_only),
                   403)  # it would create
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**minimal("CarePlan", "alice"), "title": "revised"},
         "request": {"method": "PUT", "url": "CarePlan?patient=alice"}},
        {"request": {"method": "DELETE", "url": "CarePlan?patient=nobody"}}]}
    resp = careplan.post("/fhir", bundle)

    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert [e["response"]["status"] for e in resp.json["entry"]] == ["200 OK", "204 No Content"]
    assert careplan.search("CarePlan", "patient=alice")["entry"][0]["resource"]["title"] == "revised"
