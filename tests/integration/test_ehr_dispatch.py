"""Heartbeats and resends, driven with a clock the test sets, against a real HTTP endpoint process."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from services.aftercare.backoff import RetryPolicy
from services.aftercare.delivery import Dispatcher
from services.aftercare.resources import build_registry
from services.aftercare.samples import BACKPORT, notification_status, subscription
from shared.config import Settings
from shared.events.outbox import Outbox
from shared.fhir.registry import Repository
from shared.fhir.store import open_store
from tests.support.ports import port
from tests.support.postgres import store_locator
from tests.support.receiver import Receiver

PORT = port(18103)


def test_a_subscription_that_asked_for_heartbeats_gets_one_after_a_quiet_period(tmp_path) -> None:
    receiver = Receiver(PORT, tmp_path)
    try:
        url = receiver.url
        settings = Settings("aftercare", database=store_locator(tmp_path / "aftercare.db"))
        store, registry = open_store(settings.database), build_registry(settings)
        now = [datetime(2026, 3, 2, 9, 0, tzinfo=UTC)]
        dispatcher = Dispatcher(store, Repository(registry), Outbox(settings.base_url), settings.base_url,
                                RetryPolicy(0.1, 1), clock=lambda: now[0])
        sub = subscription("careplan-revised", "p1", f"{url}/notify", "Organization/ehr-a")
        sub["channel"]["extension"].append({"url": f"{BACKPORT}/backport-heartbeat-period", "valueUnsignedInt": 60})
        with store.transaction() as tx:
            sid = Repository(registry).create(tx, sub).id
        while dispatcher.deliver_next(sid):
            pass
        assert store.read("Subscription", sid).resource["status"] == "active"

        dispatcher.heartbeats()
        assert store.work(f"sub:{sid}", ("queued",), 10) == []  # just handshaken: not quiet yet
        now[0] += timedelta(seconds=61)
        dispatcher.heartbeats()
        dispatcher.heartbeats()  # a heartbeat already queued is not queued twice
        assert len(store.work(f"sub:{sid}", ("queued",), 10)) == 1
        while dispatcher.deliver_next(sid):
            pass
        kinds = [notification_status(json.loads(r["body"]))["type"] for r in receiver.received()]
        assert kinds == ["handshake", "heartbeat"]
    finally:
        receiver.proc.kill()


def test_a_subscription_that_failed_for_too_long_goes_to_error_and_resumes_after_a_new_handshake(tmp_path) -> None:
    from services.aftercare.samples import consent

    receiver = Receiver(PORT, tmp_path)
    try:
        settings = Settings("aftercare", database=store_locator(tmp_path / "aftercare.db"))
        store, registry = open_store(settings.database), build_registry(settings)
        repo = Repository(registry)
        now = [datetime(2026, 3, 2, 9, 0, tzinfo=UTC)]
        dispatcher = Dispatcher(store, repo, Outbox(settings.base_url), settings.base_url,
                                RetryPolicy(0.001, 0.001, timedelta(hours=1)), clock=lambda: now[0])
        with store.transaction() as tx:
            repo.create(tx, consent("p1", ["Organization/ehr-a"]))
            sid = repo.create(tx, subscription("careplan-revised", "p1", f"{receiver.url}/notify",
                                               "Organization/ehr-a")).id
        while dispatcher.deliver_next(sid):
            pass
        careplan = {"resourceType": "CarePlan", "id": "cp1", "status": "active", "intent": "plan",
                    "subject": {"reference": "Patient/p1"}}
        with store.transaction() as tx:
            tx.enqueue(f"sub:{sid}", {"kind": "event", "type": "iop.careplan.revised", "patient": "p1",
                                      "ce_id": "e1", "time": "2026-03-02T09:00:00Z", "focus": "CarePlan/cp1",
                                      "source_base": "http://127.0.0.1:8082/fhir", "resources": [careplan]})
        receiver.mode("fail")
        dispatcher.deliver_next(sid)
        assert store.read("Subscription", sid).resource["status"] == "active"  # one failure is not the end
        now[0] = datetime.now(UTC) + timedelta(hours=2)  # the item was queued now; two hours of failures later
        dispatcher.deliver_next(sid)
        sub = store.read("Subscription", sid)
        assert sub.resource["status"] == "error"
        assert [dict(e.headers)["ce_type"] for e in store.unsent_events(10)][-1] == "iop.ehr.failed"
        assert dispatcher.deliver_next(sid) is False  # an EHR in error waits

        receiver.mode("ok")
        with store.transaction() as tx:
            repo.update(tx, "Subscription", sid, dict(sub.resource, status="requested"))
        while dispatcher.deliver_next(sid):
            pass
        assert store.read("Subscription", sid).resource["status"] == "active"
        kinds = [notification_status(json.loads(r["body"]))["type"] for r in receiver.received()]
        assert kinds == ["handshake", "handshake", "event-notification"]
    finally:
        receiver.proc.kill()
