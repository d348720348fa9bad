"""A token bound to one Patient on every service's real app: its own compartment only, on every path (reads,
searches, totals, writes, Bundle entries, history, includes, chains, `$everything`, export); anything of another
patient answers as if it did not exist (404, absent, uncounted) or is refused (403) when written."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from shared.auth import mint
from shared.fhir.patients import compartment_param
from tests.integration.test_fhir_conformance import (
    ALICE,
    BOB,
    WRITABLE,
    Fhir,
    Pair,
    assert_outcome,
    fhir,  # noqa: F401 - the fixture of a service under test, its patients known
    new_app,
    registry_of,
)
from tests.support.auth import TEST_SECRET
from tests.support.examples import SHAPES, minimal

IN_COMPARTMENT = [p for p in WRITABLE if p.rtype != "Patient"
                  and compartment_param(registry_of(p.service).types[p.rtype])[0]]
OUTSIDE = [p for p in WRITABLE if p.rtype != "Patient" and p not in IN_COMPARTMENT]


def as_patient(patient: str = ALICE, scope: str = "patient/*.cruds") -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(TEST_SECRET, scope, subject='app-1', patient=f'Patient/{patient}')}"}


@pytest.fixture(params=IN_COMPARTMENT, ids=str)
def pair(request: pytest.FixtureRequest) -> Pair:
    return request.param


def created(server: Fhir, resource: dict) -> dict:
    resp = server.post(f"/fhir/{resource['resourceType']}", resource)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    return resp.get_json()


def ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def test_a_patient_token_reads_and_searches_its_own_compartment_only(fhir: Fhir, pair: Pair) -> None:  # noqa: F811
    rtype, param = pair.rtype, SHAPES[pair.rtype].patient_param
    mine, theirs = created(fhir, minimal(rtype, ALICE)), created(fhir, minimal(rtype, BOB))
    me = as_patient()
    assert fhir.get(f"/fhir/{rtype}/{mine['id']}", headers=me).status_code == 200
    hidden = assert_outcome(fhir.get(f"/fhir/{rtype}/{theirs['id']}", headers=me), 404)
    absent = assert_outcome(fhir.get(f"/fhir/{rtype}/{uuid.uuid4()}", headers=me), 404)
    assert hidden["issue"][0]["code"] == absent["issue"][0]["code"] == "not-found"
    for path in (f"/fhir/{rtype}/{theirs['id']}/_history", f"/fhir/{rtype}/{theirs['id']}/_history/1"):
        assert_outcome(fhir.get(path, headers=me), 404)
    assert fhir.get(f"/fhir/{rtype}/{mine['id']}/_history", headers=me).get_json()["total"] == 1
    everything = fhir.get(f"/fhir/{rtype}", headers=me).get_json()
    assert ids(everything) == [mine["id"]] and everything["total"] == 1
    assert fhir.get(f"/fhir/{rtype}?{param}=Patient/{BOB}", headers=me).get_json()["total"] == 0
    assert fhir.get(f"/fhir/{rtype}?_id={theirs['id']}&_summary=count", headers=me).get_json()["total"] == 0
    posted = fhir.post(f"/fhir/{rtype}/_search", f"_id={mine['id']},{theirs['id']}", headers=me,
                       content_type="application/x-www-form-urlencoded")
    assert ids(posted.get_json()) == [mine["id"]]
    assert_outcome(fhir.get(f"/fhir/{rtype}/_history", headers=me), 403)
    assert_outcome(fhir.get("/fhir/_history", headers=me), 403)


def test_a_patient_token_writes_in_its_own_compartment_only(fhir: Fhir, pair: Pair) -> None:  # noqa: F811
    rtype = pair.rtype
    theirs = created(fhir, minimal(rtype, BOB))
    me = as_patient()
    assert_outcome(fhir.post(f"/fhir/{rtype}", minimal(rtype, BOB), headers=me), 403)
    assert_outcome(fhir.put(f"/fhir/{rtype}/{theirs['id']}", theirs, headers=me), 403)
    fresh = str(uuid.uuid4())
    assert_outcome(fhir.put(f"/fhir/{rtype}/{fresh}", {**minimal(rtype, BOB), "id": fresh}, headers=me), 403)
    assert_outcome(fhir.delete(f"/fhir/{rtype}/{theirs['id']}", headers=me), 403)
    assert_outcome(fhir.send("PATCH", f"/fhir/{rtype}/{theirs['id']}", [{"op": "test", "path": "/id",
                   "value": theirs["id"]}], content_type="application/json-patch+json", headers=me), 404)
    mine = fhir.post(f"/fhir/{rtype}", minimal(rtype, ALICE), headers=me)
    assert mine.status_code == 201, mine.get_data(as_text=True)
    moved = minimal(rtype, BOB) | {"id": mine.get_json()["id"]}
    assert_outcome(fhir.put(f"/fhir/{rtype}/{moved['id']}", moved, headers=me), 403)  # out of the compartment
    untouched = fhir.get(f"/fhir/{rtype}/{theirs['id']}").get_json()
    assert untouched["meta"]["versionId"] == "1"


def test_bundle_entries_of_a_patient_token_stay_in_its_compartment(fhir: Fhir, pair: Pair) -> None:  # noqa: F811
    rtype = pair.rtype
    theirs = created(fhir, minimal(rtype, BOB))
    me = as_patient()
    before = fhir.get(f"/fhir/{rtype}?_summary=count").get_json()["total"]
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": minimal(rtype, ALICE),
         "request": {"method": "POST", "url": rtype}},
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": minimal(rtype, BOB),
         "request": {"method": "POST", "url": rtype}}]}
    assert_outcome(fhir.post("/fhir", transaction, headers=me), 403)
    assert fhir.get(f"/fhir/{rtype}?_summary=count").get_json()["total"] == before  # all or nothing
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"{rtype}/{theirs['id']}"}},
        {"request": {"method": "GET", "url": f"{rtype}?_id={theirs['id']}"}},
        {"resource": theirs, "request": {"method": "PUT", "url": f"{rtype}/{theirs['id']}"}},
        {"request": {"method": "DELETE", "url": f"{rtype}/{theirs['id']}"}}]}
    answer = fhir.post("/fhir", batch, headers=me).get_json()
    statuses = [e["response"]["status"].split()[0] for e in answer["entry"]]
    assert statuses == ["404", "200", "403", "403"]
    assert answer["entry"][1]["resource"]["total"] == 0


@pytest.mark.parametrize("outside", OUTSIDE, ids=str)
def test_types_outside_any_compartment_are_refused_to_a_patient_token(tmp_path: Path, outside: Pair) -> None:
    server = Fhir(new_app(outside.service, tmp_path))
    me = as_patient()
    assert_outcome(server.get(f"/fhir/{outside.rtype}", headers=me), 403)
    assert_outcome(server.post(f"/fhir/{outside.rtype}", minimal(outside.rtype, ALICE), headers=me), 403)
    assert_outcome(server.get("/fhir/AuditEvent", headers=me), 403)
    server.app.extensions["iop"].store.close()


def test_intake_includes_chains_everything_and_export_keep_to_the_compartment(tmp_path: Path) -> None:
    intake = Fhir(new_app("intake", tmp_path))
    intake.admit(ALICE, BOB)
    mine, theirs = created(intake, minimal("Observation", ALICE)), created(intake, minimal("Observation", BOB))
    me = as_patient()
    included = intake.get("/fhir/Observation?_include=Observation:subject", headers=me).get_json()
    assert {(e["resource"]["resourceType"], e["resource"]["id"]) for e in included["entry"]} == {
        ("Observation", mine["id"]), ("Patient", ALICE)}
    rev = intake.get(f"/fhir/Patient?_id={ALICE},{BOB}&_revinclude=Observation:subject", headers=me).get_json()
    assert {e["resource"]["id"] for e in rev["entry"]} == {ALICE, mine["id"]} and rev["total"] == 1
    assert intake.get(f"/fhir/Observation?subject:Patient.identifier=MRN-{BOB}", headers=me).get_json()[
        "total"] == 0
    assert intake.get("/fhir/Patient?_has:Observation:subject:status=final", headers=me).get_json()["total"] == 1
    own = intake.get(f"/fhir/Patient/{ALICE}/$everything", headers=me).get_json()
    assert theirs["id"] not in str(own) and BOB not in str(own) and mine["id"] in str(own)
    assert_outcome(intake.get(f"/fhir/Patient/{BOB}/$everything", headers=me), 404)
    assert_outcome(intake.get(f"/fhir/Patient/{BOB}", headers=me), 404)
    assert intake.get(f"/fhir/Patient/{ALICE}", headers=me).status_code == 200
    assert_outcome(intake.post("/fhir/Patient", minimal("Patient", "someone-new"), headers=me), 403)
    async_ = {"Prefer": "respond-async"}
    assert_outcome(intake.get("/fhir/$export", headers={**me, **async_}), 403)
    kicked = intake.get("/fhir/Patient/$export", headers={**me, **async_})
    assert kicked.status_code == 202
    catalogue = intake.get("/fhir/Questionnaire", headers=as_patient(scope="patient/*.rs"))
    assert catalogue.status_code == 200 and catalogue.get_json()["total"] > 0
    intake.app.extensions["iop"].store.close()


def test_patient_scopes_without_a_patient_grant_nothing_and_operations_are_refused(tmp_path: Path) -> None:
    aftercare = Fhir(new_app("aftercare", tmp_path))
    unbound = {"Authorization": f"Bearer {mint(TEST_SECRET, 'patient/*.cruds')}"}
    refused = assert_outcome(aftercare.get("/fhir/CarePlan", headers=unbound), 403)
    assert "patient claim" in refused["issue"][0]["diagnostics"]
    sweep = {"resourceType": "Parameters", "parameter": [{"name": "date", "valueDate": "2026-01-01"}]}
    assert_outcome(aftercare.post("/fhir/CarePlan/$sweep-checkins", sweep, headers=as_patient()), 403)
    assert_outcome(aftercare.get("/fhir/Subscription/$topic-list", headers=as_patient()), 403)
    read_only = as_patient(scope="patient/*.rs")
    assert aftercare.get("/fhir/CarePlan", headers=read_only).status_code == 200
    assert_outcome(aftercare.post("/fhir/Consent", minimal("Consent", ALICE), headers=read_only), 403)
    aftercare.app.extensions["iop"].store.close()
