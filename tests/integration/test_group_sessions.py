"""A group session's attendance: one Encounter per patient, recorded in one transaction, no one else's identity."""
from __future__ import annotations

import json

from services.encounters.app import create_app
from tests.support.auth import TEST_SECRET, bearer
from tests.support.postgres import store_locator

JSON = {"Content-Type": "application/fhir+json", **bearer()}


def attendee(patient: str, attendance: str) -> dict:
    return {"name": "attendee", "part": [{"name": "patient", "valueReference": {"reference": f"Patient/{patient}"}},
                                          {"name": "attendance", "valueCode": attendance}]}


def group(attendees: list[dict]) -> dict:
    return {"resourceType": "Parameters", "parameter": [
        {"name": "group", "valueString": "grp-2026-03-02-am"},
        {"name": "start", "valueDateTime": "2026-03-02T09:00:00+00:00"},
        {"name": "end", "valueDateTime": "2026-03-02T12:00:00+00:00"}, *attendees]}


def test_a_groups_attendance_is_one_encounter_per_patient_with_only_their_own_identity(tmp_path) -> None:
    app = create_app({"database": store_locator(tmp_path / "enc.db"), "auth_hs256_secret": TEST_SECRET})
    client = app.test_client()
    body = group([attendee("p-ann", "attended"), attendee("p-bo", "no-show"), attendee("p-cy", "excused")])
    resp = client.post("/fhir/Encounter/$record-group-attendance", data=json.dumps(body), headers=JSON)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    encounters = [e["resource"] for e in resp.json["entry"]]
    assert [e["status"] for e in encounters] == ["finished", "cancelled", "cancelled"]
    for enc, own in zip(encounters, ("p-ann", "p-bo", "p-cy"), strict=True):
        text = json.dumps(enc)
        others = {"p-ann", "p-bo", "p-cy"} - {own}
        assert enc["subject"]["reference"] == f"Patient/{own}"
        assert not any(other in text for other in others), "another patient's identity in a patient's record"
        assert enc["identifier"][0]["value"] == "grp-2026-03-02-am"
    store = app.extensions["iop"].store
    types = [dict(e.headers)["ce_type"] for e in store.unsent_events(100)]
    assert sorted(types) == ["iop.encounter.cancelled", "iop.encounter.cancelled", "iop.encounter.finished"]
    again = client.post("/fhir/Encounter/$record-group-attendance", data=json.dumps(body), headers=JSON)
    assert again.status_code == 200
    assert client.get("/fhir/Encounter?identifier=grp-2026-03-02-am", headers=JSON).json["total"] == 3


def test_a_group_with_a_patient_twice_is_refused_and_nothing_is_recorded(tmp_path) -> None:
    app = create_app({"database": store_locator(tmp_path / "enc.db"), "auth_hs256_secret": TEST_SECRET})
    client = app.test_client()
    body = group([attendee("p-ann", "attended"), attendee("p-ann", "no-show")])
    resp = client.post("/fhir/Encounter/$record-group-attendance", data=json.dumps(body), headers=JSON)
    assert resp.status_code == 422 and resp.json["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/Encounter", headers=JSON).json["total"] == 0
    assert app.extensions["iop"].store.unsent_events(10) == []
