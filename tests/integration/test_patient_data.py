"""A patient's data out of a service: `Patient/{id}/$everything` (paged, `_type`, `_since`) and the Bulk Data 2.0
`$export` (system, Patient, Group) with its async pattern, on the services' real apps (Flask test client, real
store, the export job in its own thread) and the rules of who may see what."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from shared.fhir import bulk
from tests.integration.test_fhir_conformance import Fhir, assert_outcome
from tests.support.auth import TEST_SECRET, token
from tests.support.examples import minimal
from tests.support.waiting import wait_until

ASYNC = {"Prefer": "respond-async"}


@pytest.fixture
def open_with_files(open_service: Callable[..., Fhir], tmp_path: Path) -> Callable[[str], Fhir]:
    return lambda service: open_service(service, var_dir=tmp_path / service, auth_hs256_secret=TEST_SECRET)


@pytest.fixture
def intake(open_with_files: Callable[[str], Fhir]) -> Fhir:
    return open_with_files("intake")


@pytest.fixture
def careplan(open_with_files: Callable[[str], Fhir]) -> Fhir:
    return open_with_files("careplan")


def ids(bundle: dict[str, Any]) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])}


def path_of(url: str) -> str:
    return urlsplit(url).path


def finished(fhir: Fhir, status_url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Poll a job's status URL until it answers 200; its manifest."""
    seen: list[Any] = []

    def done() -> bool:
        resp = fhir.get(path_of(status_url), headers={"Accept": "application/json", **(headers or {})})
        assert resp.status_code in (200, 202), resp.get_data(as_text=True)
        if resp.status_code == 202:
            assert resp.headers["X-Progress"]
        seen.append(resp)
        return resp.status_code == 200

    wait_until(done, 30, 0.05, "the export job to finish")
    assert seen[-1].mimetype == "application/json"
    return seen[-1].json


def download(fhir: Fhir, manifest: dict[str, Any]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for item in manifest["output"]:
        resp = fhir.get(path_of(item["url"]), headers={"Accept": "application/fhir+ndjson"})
        assert resp.status_code == 200 and resp.mimetype == "application/fhir+ndjson"
        lines = [json.loads(line) for line in resp.get_data(as_text=True).splitlines()]
        assert len(lines) == item["count"]
        out.setdefault(item["type"], []).extend(lines)
    return out


def test_everything_at_intake_is_the_patients_compartment_paged(intake: Fhir) -> None:
    patient = intake.create(minimal("Patient", "ann"))
    other = intake.create(minimal("Patient", "ben"))
    mine = [intake.create(minimal(t, patient["id"])) for t in ("Observation", "Observation", "Flag",
                                                              "ServiceRequest")]
    intake.create(minimal("Observation", other["id"]))
    url = f"/fhir/Patient/{patient['id']}/$everything"

    whole = intake.get(url).json
    first = intake.get(f"{url}?_count=2").json
    pages = [first]
    while nxt := next((lk["url"] for lk in pages[-1]["link"] if lk["relation"] == "next"), None):
        pages.append(intake.follow(nxt).json)
    only_flags = intake.get(f"{url}?_type=Flag").json

    expected = {f"Patient/{patient['id']}", *(f"{r['resourceType']}/{r['id']}" for r in mine)}
    assert ids(whole) == expected and whole["total"] == 5
    assert len(pages) == 3 and set().union(*(ids(p) for p in pages)) == expected
    assert ids(only_flags) == {f"Flag/{mine[2]['id']}"}
    assert_outcome(intake.get("/fhir/Patient/nobody/$everything"), 404)
    assert_outcome(intake.get(f"{url}?_type=Questionnaire"), 400)
    assert_outcome(intake.get(f"{url}?_since=yesterday"), 400)
    assert_outcome(intake.get(f"{url}?bogus=1"), 400)


def test_everything_at_careplan_is_what_refers_to_the_patient(careplan: Fhir) -> None:
    plan = careplan.create(minimal("CarePlan", "ann"))
    goal = careplan.create(minimal("Goal", "ann"))
    careplan.create(minimal("CarePlan", "ben"))
    later = careplan.get(f"/fhir/Goal/{goal['id']}").json["meta"]["lastUpdated"]

    everything = careplan.get("/fhir/Patient/ann/$everything").json
    since = careplan.get(f"/fhir/Patient/ann/$everything?_since={later}").json
    narrow = careplan.get("/fhir/Patient/ann/$everything",
                          headers={"Authorization": f"Bearer {token('system/Patient.r system/Goal.rs')}"}).json

    assert ids(everything) == {f"CarePlan/{plan['id']}", f"Goal/{goal['id']}"}
    assert f"Goal/{goal['id']}" in ids(since)
    assert ids(narrow) == {f"Goal/{goal['id']}"}  # what the token may not read is left out
    assert_outcome(careplan.get("/fhir/Patient/ann/$everything?_type=CarePlan",
                                headers={"Authorization": f"Bearer {token('system/Patient.r system/Goal.rs')}"}),
                   403)


def test_a_system_export_runs_async_and_serves_ndjson_to_its_own_client(careplan: Fhir) -> None:
    plans = [careplan.create(minimal("CarePlan", p)) for p in ("ann", "ben", "cy")]
    goal = careplan.create(minimal("Goal", "ann"))

    kick = careplan.get("/fhir/$export?_type=CarePlan,Goal", headers=ASYNC)
    assert kick.status_code == 202, kick.get_data(as_text=True)
    status_url = kick.headers["Content-Location"]
    manifest = finished(careplan, status_url)
    files = download(careplan, manifest)

    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    assert manifest["request"].endswith("/fhir/$export?_type=CarePlan,Goal")
    assert {r["id"] for r in files["CarePlan"]} == {p["id"] for p in plans}
    assert [r["id"] for r in files["Goal"]] == [goal["id"]]
    stranger = {"Authorization": f"Bearer {token(subject='another-client')}"}
    assert_outcome(careplan.get(path_of(status_url), headers=stranger), 404)
    assert_outcome(careplan.get(path_of(manifest["output"][0]["url"]), headers=stranger), 404)
    audits = careplan.search("AuditEvent", "_count=200")["entry"]
    reached = [e["resource"]["entity"][0]["what"].get("display", "") for e in audits]
    assert sum(1 for r in reached if r.startswith("_export/") and r.endswith(".ndjson")) >= 3  # 2 ours, 1 refused


def test_export_filters_by_since_and_type_filter_and_can_be_cancelled(careplan: Fhir) -> None:
    careplan.create(minimal("CarePlan", "ann"))
    active = careplan.create({**minimal("Goal", "ann"), "lifecycleStatus": "active"})
    careplan.create(minimal("Goal", "ben"))

    kick = careplan.get("/fhir/Patient/$export?_type=Goal&_typeFilter=Goal%3Flifecycle-status%3Dactive",
                        headers=ASYNC)
    manifest = finished(careplan, kick.headers["Content-Location"])
    files = download(careplan, manifest)
    cancel = careplan.delete(path_of(kick.headers["Content-Location"]))

    assert [r["id"] for r in files["Goal"]] == [active["id"]]
    assert cancel.status_code == 202
    assert_outcome(careplan.get(path_of(kick.headers["Content-Location"])), 404)
    assert_outcome(careplan.get(path_of(manifest["output"][0]["url"])), 404)
    future = careplan.get("/fhir/$export?_since=2999-01-01T00:00:00Z", headers=ASYNC)
    assert finished(careplan, future.headers["Content-Location"])["output"] == []


def test_a_group_export_exports_the_members_compartments(intake: Fhir) -> None:
    members = [intake.create(minimal("Patient", p)) for p in ("ann", "ben")]
    outsider = intake.create(minimal("Patient", "cy"))
    observations = [intake.create(minimal("Observation", p["id"])) for p in (*members, outsider)]
    group = intake.create({**minimal("Group", members[0]["id"]),
                           "member": [{"entity": {"reference": f"Patient/{m['id']}"}} for m in members]})

    kick = intake.get(f"/fhir/Group/{group['id']}/$export?_type=Patient,Observation", headers=ASYNC)
    files = download(intake, finished(intake, kick.headers["Content-Location"]))

    assert {r["id"] for r in files["Patient"]} == {m["id"] for m in members}
    assert {r["id"] for r in files["Observation"]} == {o["id"] for o in observations[:2]}


def test_a_job_whose_runner_stopped_is_taken_over_by_the_next_poll(careplan: Fhir) -> None:
    """As if the web process running the job had died: its state is in the store, its heartbeat old."""
    plan = careplan.create(minimal("CarePlan", "ann"))
    api = careplan.app.extensions["iop"].api
    job = bulk.Job("0f0e0d0c-0b0a-4908-8706-050403020100", {"subject": "test-client", "client": None,
                                                             "partner": None},
                   f"{careplan.base}/$export", "system", ["CarePlan"], "2025-01-01T00:00:00Z",
                   progress="exporting CarePlan (1 of 1)", runner="a-process-that-died", heartbeat=1.0)
    job.save(api.store)

    files = download(careplan, finished(careplan, f"{careplan.base}/_export/{job.id}"))

    assert [r["id"] for r in files["CarePlan"]] == [plan["id"]]


def test_bad_kick_offs_are_refused(intake: Fhir) -> None:
    partner = {"Authorization": f"Bearer {token(partner='north')}", **ASYNC}
    narrow = {"Authorization": f"Bearer {token('system/Patient.rs')}", **ASYNC}
    assert_outcome(intake.get("/fhir/$export"), 400)  # not async
    assert_outcome(intake.get("/fhir/$export?_outputFormat=text/csv", headers=ASYNC), 400)
    assert_outcome(intake.get("/fhir/$export?_type=Nothing", headers=ASYNC), 400)
    assert_outcome(intake.get("/fhir/$export?_typeFilter=Patient%3Fbogus%3D1", headers=ASYNC), 400)
    assert_outcome(intake.get("/fhir/$export?_since=soon", headers=ASYNC), 400)
    assert_outcome(intake.get("/fhir/Group/none/$export", headers=ASYNC), 404)
    assert_outcome(intake.get("/fhir/$export", headers=partner), 403)
    assert_outcome(intake.get("/fhir/$export?_type=Observation", headers=narrow), 403)
    assert_outcome(intake.get("/fhir/_export/not-a-job"), 404)
    assert_outcome(intake.delete("/fhir/_export/00000000-0000-0000-0000-000000000000"), 404)
