"""Given the running suite exporting its spans, one partner's intake is one trace across the services, an EHR's
request continues the trace of the change it announces, and every process's metrics tell the journey."""
from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from services.aftercare.samples import consent
from tests.e2e.test_ehr_delivery import create, graduate, subscribe
from tests.e2e.test_journey import admit
from tests.support.events import EventWatcher
from tests.support.otlp import OtlpReceiver
from tests.support.ports import port
from tests.support.processes import TEST_PORTS, WORKER_METRICS_PORTS
from tests.support.receiver import Receiver
from tests.support.tools import tool
from tests.support.waiting import wait_until


@pytest.fixture
def ehr(tmp_path) -> Iterator[Receiver]:
    receiver = Receiver(port(18416), tmp_path)
    yield receiver
    receiver.proc.kill()


def trace_of(seen) -> str:
    return seen.headers["traceparent"].split("-")[1]


def has(spans, service: str, kind: str, name: str) -> bool:
    return any(s.service == f"iop-{service}" and s.kind == kind and s.name == name for s in spans)


def samples(url: str) -> dict[tuple[str, tuple], float]:
    text = requests.get(url, timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_one_intake_is_one_trace_from_the_partners_post_through_every_service_that_acts_on_it(
        suite, watcher: EventWatcher, otlp: OtlpReceiver) -> None:
    patient, _ = admit(watcher)
    trace_id = trace_of(watcher.wait_for("iop.careplan.created", patient)[0])
    expected = [("intake", "server", "POST /fhir"), ("intake", "producer", "publish iop.intake.events"),
                ("careplan", "consumer", "process iop.intake.assessed"),
                ("careplan", "producer", "publish iop.careplan.events"),
                ("encounters", "consumer", "process iop.careplan.created"),
                ("aftercare", "consumer", "process iop.careplan.created")]

    def all_there() -> bool:
        return all(has(otlp.trace(trace_id), *want) for want in expected)

    wait_until(all_there, 30, 0.2, "the intake's spans from every service")
    spans = otlp.trace(trace_id)
    roots = [s for s in spans if not s.parent_id]
    assert [(r.service, r.kind) for r in roots] == [("iop-intake", "server")]  # the partner's POST began it
    ids = {s.span_id for s in spans}
    assert all(s.parent_id in ids for s in spans if s.parent_id), "a span whose parent is in another trace"
    logged = [json.loads(line) for line in suite["careplan-worker"].log.read_text().splitlines()
              if line.startswith("{") and trace_id in line]
    assert logged and all(line["trace_id"] == trace_id for line in logged)


def test_an_ehrs_request_continues_the_trace_of_the_change_it_announces(
        suite, watcher: EventWatcher, otlp: OtlpReceiver, ehr: Receiver) -> None:
    patient, careplan = admit(watcher)
    create(consent(patient, ["Organization/ehr-a"]))
    subscribe("aftercare-planned", patient, ehr, "Organization/ehr-a")
    graduate(careplan["id"])
    wait_until(lambda: ehr.notifications(), 30, what="notification received")
    request = next(r for r in ehr.received() if "event-notification" in r["body"])
    _, trace_id, parent_id, _ = request["headers"]["traceparent"].split("-")

    expected = [("careplan", "server", "POST /fhir/CarePlan/{id}/$graduate"),
                ("aftercare", "consumer", "process iop.careplan.graduated"),
                ("aftercare", "internal", "deliver notification"), ("aftercare", "client", "POST EHR")]

    def all_there() -> bool:  # each process exports its spans in its own batches, as each span ends
        return all(has(otlp.trace(trace_id), *want) for want in expected)

    wait_until(all_there, 30, 0.2, "the spans from the graduation to the EHR's request")
    spans = otlp.trace(trace_id)
    client = [s for s in spans if s.service == "iop-aftercare" and s.kind == "client"]
    assert client[0].span_id == parent_id  # the EHR sees the span of its own request as the parent
    assert [s.service for s in spans if not s.parent_id] == ["iop-careplan"]

    web = samples(f"http://127.0.0.1:{TEST_PORTS['aftercare']}/metrics")
    assert web[("iop_subscriptions", (("status", "active"),))] >= 1
    assert any(name == "iop_consumer_lag" and dict(labels)["group"] == "iop-aftercare" for name, labels in web)
    worker = wait_until(lambda: (s := samples(f"http://127.0.0.1:{WORKER_METRICS_PORTS['aftercare']}/metrics"))
                        .get(("iop_ehr_deliveries_total", (("outcome", "delivered"),)), 0) >= 1 and s, 30)
    assert worker[("iop_ehr_delivery_duration_seconds_count", (("outcome", "delivered"),))] >= 1
    for url in (f"http://127.0.0.1:{WORKER_METRICS_PORTS['aftercare']}/metrics",
                f"http://127.0.0.1:{TEST_PORTS['aftercare']}/metrics"):
        checked = subprocess.run([tool("promtool"), "check", "metrics"], input=requests.get(url, timeout=10).text,
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    careplan_worker = samples(f"http://127.0.0.1:{WORKER_METRICS_PORTS['careplan']}/metrics")
    assert careplan_worker[("iop_events_applied_total", (("event_type", "iop.intake.assessed"),
                                                         ("group", "iop-careplan")))] >= 1
