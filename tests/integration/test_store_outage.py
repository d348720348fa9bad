"""PostgreSQL going away under a service: 503 with an OperationOutcome and Retry-After (never a 500, never a hang),
recovery without a restart, and a consumer that waits for the store rather than dead-lettering.

The server is this module's own (port(18433)), so that stopping it disturbs no other test.
"""
from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from functools import partial

import pytest
from kafka import KafkaProducer

from services.careplan.app import create_app
from shared.events import kafka
from shared.events.consumer import ConsumerRunner, RunnerConfig
from shared.events.envelope import Event, build_event
from shared.fhir.store import StoreUnavailable, Transaction
from shared.fhir.store_pg import PostgresStore
from tests.integration.test_event_backbone import BASE, TOPIC, careplan
from tests.support.auth import TEST_SECRET, bearer
from tests.support.broker import Broker
from tests.support.events import start_at_end
from tests.support.examples import minimal
from tests.support.ports import port
from tests.support.postgres import PgServer
from tests.support.waiting import wait_until

JSON = {"Content-Type": "application/fhir+json", **bearer()}


@pytest.fixture(scope="module")
def own_server() -> Iterator[PgServer]:
    server = PgServer(port(18433)).start()
    yield server
    server.close()


@pytest.fixture
def quick_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOP_PG_TIMEOUT_S", "2")
    monkeypatch.setenv("IOP_PG_STATEMENT_TIMEOUT_MS", "3000")


def assert_unavailable(resp) -> None:
    assert resp.status_code == 503, resp.get_data(as_text=True)
    outcome = json.loads(resp.get_data())
    assert outcome["resourceType"] == "OperationOutcome"
    assert [i["code"] for i in outcome["issue"]] == ["transient"]
    assert int(resp.headers["Retry-After"]) >= 1


def test_a_store_that_never_answered_is_503_with_retry_after(quick_timeouts: None) -> None:
    nowhere = f"postgresql://iop@127.0.0.1:{port(18434)}/iop_careplan"  # nothing listens there
    app = create_app({"database": nowhere, "auth_hs256_secret": TEST_SECRET})
    client = app.test_client()

    assert_unavailable(client.get("/fhir/Goal/g1", headers=JSON))
    assert_unavailable(client.post("/fhir/Goal", data=json.dumps(minimal("Goal", "p1")), headers=JSON))
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json["checks"]["store"] == "unreachable"


def test_a_restarted_store_is_503_while_down_and_serves_again_without_a_restart(
        own_server: PgServer, quick_timeouts: None) -> None:
    app = create_app({"database": own_server.create_database("web"), "auth_hs256_secret": TEST_SECRET})
    client = app.test_client()
    created = client.post("/fhir/Goal", data=json.dumps(minimal("Goal", "p1")), headers=JSON)
    assert created.status_code == 201, created.get_data(as_text=True)
    gid = created.json["id"]

    own_server.stop()
    try:
        assert_unavailable(client.get(f"/fhir/Goal/{gid}", headers=JSON))
        assert_unavailable(client.post("/fhir/Goal", data=json.dumps(minimal("Goal", "p2")), headers=JSON))
        assert_unavailable(client.get("/fhir/Goal", query_string={"patient": "p1"}, headers=JSON))
        assert client.get("/readyz").status_code == 503
    finally:
        own_server.start()

    wait_until(lambda: client.get(f"/fhir/Goal/{gid}", headers=JSON).status_code == 200, 60,
               interval=0.2, what="the same app serving again")
    again = client.post("/fhir/Goal", data=json.dumps(minimal("Goal", "p2")), headers=JSON)
    assert again.status_code == 201
    assert client.get("/readyz").status_code == 200
    found = client.get("/fhir/Goal", query_string={"patient": "p1"}, headers=JSON).json
    assert [e["resource"]["id"] for e in found["entry"]] == [gid]
    app.extensions["iop"].store.close()


def test_a_consumer_waits_for_the_store_and_applies_every_event_once_without_dead_letters(
        own_server: PgServer, quick_timeouts: None, broker: Broker) -> None:
    """The store stops under a running consumer: nothing is dead-lettered (the autouse watch fails the test on one)
    and every event takes effect exactly once when it is back."""
    store = PostgresStore(own_server.create_database("consumer"))
    group = f"test-store-outage-{uuid.uuid4().hex[:8]}"
    start_at_end(broker.bootstrap, group, [TOPIC])

    def plan_of(tx: Transaction, event: Event) -> None:  # a second effect of one event: a 412, refused
        resource = {"resourceType": "CarePlan", "status": "active", "intent": "plan",
                    "subject": {"reference": f"Patient/{event.key}"}}
        tx.write("CarePlan", event.subject.split("/")[1], resource, [], expected_version=0)

    config = RunnerConfig(group, {"iop.careplan.created": plan_of}, [TOPIC], max_attempts=2, backoff_ms=50)
    runner = ConsumerRunner(store, kafka.consumer(broker.bootstrap, group, [TOPIC]),
                            partial(kafka.producer, broker.bootstrap), config)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    patient = f"pt-{uuid.uuid4().hex[:8]}"

    def send(numbers: range) -> None:
        for n in numbers:
            event = build_event("iop.careplan.created", BASE, patient, careplan(n, patient))
            producer.send(TOPIC, key=event.key.encode(), value=event.value.encode(),
                          headers=[(k, v.encode()) for k, v in event.headers])
        producer.flush(10)

    def applied() -> int:
        try:
            return store.search("CarePlan", [], "r.created_seq", 0, 0).total
        except StoreUnavailable:  # the server is starting again
            return -1

    thread.start()
    try:
        send(range(20))
        wait_until(lambda: applied() == 20, 60, what="the first 20 plans")
        own_server.stop()
        try:
            send(range(20, 40))
            with pytest.raises(StoreUnavailable):
                store.ping()
            wait_until(lambda: runner.store_waits >= 2, 60, what="the consumer meeting the outage twice")
        finally:
            own_server.start()
        wait_until(lambda: applied() == 40, 90, interval=0.2, what="every plan once the store is back")
    finally:
        stop.set()
        thread.join(30)
        producer.close(5)
    assert runner.dead_lettered == 0 and runner.handler_errors == 0
    assert store.history("CarePlan", None, None, 100, 0).total == 40  # one version each: no effect twice
    store.close()
