"""Real third-party FHIR clients against the careplan service running under gunicorn (two workers).

No special-casing: what an EHR integration would write with fhirpy's SyncFHIRClient or SMART's fhirclient must
work as is: create, read, update, PATCH, conditional update, search with parameters, includes, chains and paging
by the server's next links; and a Bulk Data 2.0 export driven by a client written from the specification, whose
kick-off, polling and downloads land on either worker. The web process runs without Kafka
(IOP_READY_REQUIRES_KAFKA=0): only the REST API is under test. It binds a free port rather than the suite's
fixed test port, so it never meets a suite already running.
"""
from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import requests
from fhirclient.models.careplan import CarePlan
from fhirclient.models.fhirsearch import FHIRSearch
from fhirclient.models.goal import Goal
from fhirclient.server import FHIRServer
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ResourceNotFound

from shared.serving import gunicorn_argv
from tests.support import processes
from tests.support.auth import token
from tests.support.bulk_client import BulkClient, BulkError
from tests.support.examples import minimal
from tests.support.waiting import wait_until

ALICE, BOB, ERIN = "alice-rivera", "bob-chen", "erin-walsh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def careplan_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The careplan web process (gunicorn, two workers), its own store, no broker."""
    var_dir = tmp_path_factory.mktemp("fhir-client")
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    env = processes.service_env(var_dir, "127.0.0.1:9", extra={
        "IOP_READY_REQUIRES_KAFKA": "0", "IOP_CAREPLAN_PORT": str(port), "IOP_CAREPLAN_BASE_URL": base})
    argv = gunicorn_argv("careplan", port, workers=2, threads=4)
    web = processes.Proc("careplan-web", argv, env, var_dir / "log" / "careplan-web.log").start()

    def ready() -> bool:
        assert web.popen.poll() is None, f"gunicorn exited; see {web.log}"
        try:
            return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_until(ready, 60, 0.1, "careplan ready")
        yield base
    finally:
        web.stop()


@pytest.fixture
def client(careplan_base: str) -> SyncFHIRClient:
    return SyncFHIRClient(careplan_base, authorization=f"Bearer {token()}")


def test_a_care_plan_is_created_read_and_revised(client: SyncFHIRClient) -> None:
    plan = client.resource("CarePlan", **minimal("CarePlan", ALICE))
    plan.save()

    assert plan.id
    assert plan["meta"]["versionId"] == "1"
    read = client.reference("CarePlan", plan.id).to_resource()
    assert read["title"] == "IOP treatment plan"
    assert read["subject"]["reference"] == f"Patient/{ALICE}"

    read["title"] = "IOP treatment plan (week 2 review)"
    read.save()

    assert read["meta"]["versionId"] == "2"
    again = client.reference("CarePlan", plan.id).to_resource()
    assert again["title"] == "IOP treatment plan (week 2 review)"
    assert again["meta"]["versionId"] == "2"


def test_search_with_parameters(client: SyncFHIRClient) -> None:
    draft = client.resource("CarePlan", **minimal("CarePlan", ERIN))
    draft.save()
    active = client.resource("CarePlan", **{**minimal("CarePlan", ERIN), "status": "active"})
    active.save()

    found = client.resources("CarePlan").search(subject=f"Patient/{ERIN}", status="draft").fetch_all()
    by_id = client.resources("CarePlan").search(_id=active.id).get()

    assert [p.id for p in found] == [draft.id]
    assert by_id["status"] == "active"
    assert client.resources("CarePlan").search(patient=ERIN).count() == 2
    with pytest.raises(ResourceNotFound):
        client.resources("CarePlan").search(patient="nobody-here").get()


def test_paging_through_25_care_plans_ten_at_a_time(client: SyncFHIRClient) -> None:
    created = set()
    for _ in range(25):
        plan = client.resource("CarePlan", **minimal("CarePlan", BOB))
        plan.save()
        created.add(plan.id)
    search = client.resources("CarePlan").search(subject=f"Patient/{BOB}").limit(10)

    first_page = search.fetch()
    every = search.fetch_all()
    iterated = [p.id for p in search]

    assert len(first_page) == 10
    assert len(every) == 25
    assert {p.id for p in every} == created
    assert sorted(iterated) == sorted(created)  # every plan exactly once
    assert search.count() == 25


def test_includes_revincludes_and_chains_through_fhirpy(client: SyncFHIRClient) -> None:
    goal = client.resource("Goal", **{**minimal("Goal", "dana-ortiz"), "lifecycleStatus": "active"})
    goal.save()
    plans = []
    for _ in range(3):
        plan = client.resource("CarePlan", **{**minimal("CarePlan", "dana-ortiz"), "goal": [goal.to_reference()]})
        plan.save()
        plans.append(plan.id)

    search = client.resources("CarePlan").search(patient="dana-ortiz").include("CarePlan", "goal").limit(2)
    pages = search.fetch_raw()
    every = search.fetch_all()
    chained = client.resources("CarePlan").search(**{"goal:Goal.lifecycle-status": "active"}).fetch_all()
    reverse = client.resources("Goal").search(_id=goal.id).revinclude("CarePlan", "goal").fetch_raw()

    assert {e["search"]["mode"] for e in pages["entry"]} == {"match", "include"}
    assert sorted(p.id for p in every if p.resource_type == "CarePlan") == sorted(plans)
    assert {p.id for p in chained} >= set(plans)
    assert {e["resource"]["id"] for e in reverse["entry"] if e["search"]["mode"] == "include"} == set(plans)


def test_patch_and_conditional_update_through_fhirpy(client: SyncFHIRClient) -> None:
    plan = client.resource("CarePlan", **minimal("CarePlan", "eli-park"))
    plan.save()

    plan.patch(title="IOP treatment plan (patched)")
    client.resources("CarePlan").search(patient="eli-park").update(
        client.resource("CarePlan", **{**minimal("CarePlan", "eli-park"), "description": "conditionally updated"}))
    again = client.reference("CarePlan", plan.id).to_resource()

    assert again["meta"]["versionId"] == "3"
    assert again.get("description") == "conditionally updated"


def test_smart_fhirclient_reads_the_capability_statement_searches_with_includes_and_writes(careplan_base: str) -> None:
    server = FHIRServer(None, base_uri=careplan_base)
    server.session.headers["Authorization"] = f"Bearer {token()}"
    server.get_capability()
    created_goal = Goal(minimal("Goal", "fay-lin")).create(server)
    plan = CarePlan({**minimal("CarePlan", "fay-lin"), "goal": [{"reference": f"Goal/{created_goal['id']}"}]})
    plan.create(server)

    found = list(FHIRSearch(CarePlan, {"patient": "fay-lin"}).include("goal").perform_resources_iter(server))

    statement = server.capabilityStatement
    rest = statement.rest[0]
    assert any(r.type == "CarePlan" and "CarePlan:goal" in (r.searchInclude or []) for r in rest.resource)
    assert {type(r).__name__ for r in found} == {"CarePlan", "Goal"}


def test_a_bulk_export_through_a_client_written_from_the_specification(careplan_base: str) -> None:
    bulk = BulkClient(careplan_base, token(subject="bulk-client"))
    written = set()
    for _ in range(120):
        plan = requests.post(f"{careplan_base}/CarePlan", json=minimal("CarePlan", "gil-ross"), timeout=10,
                             headers={"Authorization": f"Bearer {token()}", "Content-Type": "application/fhir+json"})
        written.add(plan.json()["id"])

    everything = bulk.export("$export", {"_type": "CarePlan"})
    one_patient = bulk.export("Patient/$export", {"_type": "CarePlan,Goal",
                                                  "_typeFilter": "CarePlan?patient=gil-ross"})

    assert written <= {r["id"] for r in everything["CarePlan"]}
    assert {r["id"] for r in one_patient["CarePlan"]} == written
    status_url = bulk.kick_off("$export", {"_type": "Goal"})
    other = BulkClient(careplan_base, token(subject="someone-else"))
    with pytest.raises(BulkError) as refused:
        other.wait(status_url, timeout=5)
    assert refused.value.status == 404
    bulk.delete(status_url)
    with pytest.raises(BulkError):
        bulk.wait(status_url, timeout=5)
