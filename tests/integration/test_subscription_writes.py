"""The delivery worker writes a Subscription only if it is still the version the work started from."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from services.aftercare.backoff import RetryPolicy
from services.aftercare.delivery import Dispatcher
from services.aftercare.resources import build_registry
from services.aftercare.samples import consent, subscription
from shared.config import Settings
from shared.events.outbox import Outbox
from shared.fhir.registry import Repository
from shared.fhir.store import open_store
from tests.support.interrupting_endpoint import InterruptingEndpoint
from tests.support.ports import port
from tests.support.postgres import store_locator

CAREPLAN = {"resourceType": "CarePlan", "id": "cp1", "status": "active", "intent": "plan",
            "subject": {"reference": "Patient/p1"}}


class Aftercare:
    """aftercare's store and delivery worker, with a clock the test moves."""

    def __init__(self, path: str) -> None:
        settings = Settings("aftercare", database=path)
        self.store, self.repo = open_store(path), Repository(build_registry(settings))
        self.now = datetime.now(UTC)
        self.dispatcher = Dispatcher(self.store, self.repo, Outbox(settings.base_url), settings.base_url,
                                     RetryPolicy(0.001, 0.001, timedelta(hours=1)), clock=lambda: self.now)

    def subscribe(self, endpoint: str) -> str:
        with self.store.transaction() as tx:
            self.repo.create(tx, consent("p1", ["Organization/ehr-a"]))
            return self.repo.create(tx, subscription("careplan-revised", "p1", endpoint, "Organization/ehr-a")).id

    def drain(self, sid: str) -> None:
        while self.dispatcher.deliver_next(sid):
            pass

    def history(self, sid: str) -> list[str]:
        return [s.method for s in self.store.history("Subscription", sid, None, 100, 0).items]

    def delete(self, sid: str) -> None:
        with self.store.transaction() as tx:
            self.repo.delete(tx, "Subscription", sid)


@pytest.fixture
def aftercare(tmp_path) -> Aftercare:
    return Aftercare(store_locator(tmp_path / "aftercare.db"))


@pytest.fixture
def endpoint_factory() -> Iterator[Callable[..., InterruptingEndpoint]]:
    made: list[InterruptingEndpoint] = []

    def make(interrupt: Callable[[str], None], kind: str = "handshake", status: int = 200) -> InterruptingEndpoint:
        made.append(InterruptingEndpoint(port(18106), interrupt, kind, status))
        return made[-1]

    yield make
    for endpoint in made:
        endpoint.close()


def test_a_handshake_answered_after_the_client_changed_the_subscription_is_done_again_for_the_new_version(
        aftercare: Aftercare, endpoint_factory) -> None:
    def client_changes(sid: str) -> None:
        with aftercare.store.transaction() as tx:
            current = tx.read("Subscription", sid)
            aftercare.repo.update(tx, "Subscription", sid, dict(current.resource, reason="Revised plans only"))

    endpoint = endpoint_factory(client_changes)
    sid = aftercare.subscribe(endpoint.url)
    aftercare.drain(sid)
    assert not endpoint.errors
    assert endpoint.kinds(sid) == ["handshake", "handshake"]  # the first answered a version that is gone
    stored = aftercare.store.read("Subscription", sid)
    assert stored.resource["status"] == "active" and stored.resource["reason"] == "Revised plans only"
    assert aftercare.history(sid) == ["PUT", "PUT", "POST"]  # newest first: active, the client's change, create


def test_a_subscription_deleted_while_its_last_failing_delivery_was_in_flight_is_not_marked_in_error(
        aftercare: Aftercare, endpoint_factory) -> None:
    endpoint = endpoint_factory(aftercare.delete, kind="event-notification", status=503)
    sid = aftercare.subscribe(endpoint.url)
    aftercare.drain(sid)  # the handshake
    with aftercare.store.transaction() as tx:
        tx.enqueue(f"sub:{sid}", {"kind": "event", "type": "iop.careplan.revised", "patient": "p1", "ce_id": "e1",
                                  "time": "2026-03-02T09:00:00Z", "focus": "CarePlan/cp1",
                                  "source_base": "http://127.0.0.1:8082/fhir", "resources": [CAREPLAN]})
    aftercare.now += timedelta(hours=2)  # this failure is the one after which the worker gives up
    aftercare.drain(sid)
    aftercare.drain(sid)  # the next pass finds the subscription deleted
    assert not endpoint.errors and endpoint.interrupted == [sid]
    assert aftercare.store.read("Subscription", sid).deleted
    assert aftercare.history(sid) == ["DELETE", "PUT", "POST"]
    assert "iop.ehr.failed" not in [dict(e.headers)["ce_type"] for e in aftercare.store.unsent_events(100)]
    assert aftercare.store.work(f"sub:{sid}", ("queued",), 10) == []
