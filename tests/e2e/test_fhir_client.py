"""A real third-party FHIR client (fhirpy) against the careplan service running under gunicorn.

No special-casing: what an EHR integration would write with fhirpy's SyncFHIRClient must work
as is: create, read, update, search with parameters and paging by the server's next links.
The web process runs without Kafka (IOP_READY_REQUIRES_KAFKA=0): only the REST API is under test.
It binds a free port rather than the suite's fixed test port, so it never meets a suite already running.
"""
from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import requests
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ResourceNotFound

from shared.serving import gunicorn_argv
from tests.support import processes
from tests.support.auth import token
from tests.support.examples import minimal
from tests.support.waiting import wait_until

ALICE, BOB, ERIN = "alice-rivera", "bob-chen", "erin-walsh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def careplan_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The careplan web process (gunicorn, one worker), its own store, no broker."""
    var_dir = tmp_path_factory.mktemp("fhir-client")
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    env = processes.service_env(var_dir, "127.0.0.1:9", extra={
        "IOP_READY_REQUIRES_KAFKA": "0", "IOP_CAREPLAN_PORT": str(port), "IOP_CAREPLAN_BASE_URL": base})
    argv = gunicorn_argv("careplan", port, workers=1, threads=4)
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
