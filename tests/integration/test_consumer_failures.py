"""What a consumer does with an event it cannot apply, against the real broker and the running suite:
the event's own faults go to the DLQ at once, a handler's defect only after its retries and loudly."""
from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from kafka import KafkaProducer

from shared.events import kafka
from shared.events.consumer import ConsumerRunner, PoisonMessage, RunnerConfig
from shared.events.dlq import dead_letters
from shared.events.envelope import Event, build_event
from shared.fhir.outcome import FhirError
from shared.fhir.store import Transaction
from shared.logs import JsonFormatter
from tests.integration.test_event_backbone import BASE, TOPIC, careplan
from tests.support.broker import Broker
from tests.support.events import start_at_end
from tests.support.postgres import service_store
from tests.support.processes import Proc, service_env
from tests.support.waiting import wait_until

SECRET = "Jane Roe, born 1961-07-04"  # stands for the patient data an exception message may quote


@pytest.fixture
def consumer_log() -> Iterator[io.StringIO]:
    """The consumer runner's JSON log lines, as a worker writes them."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("iop.consumer")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    yield out
    logger.removeHandler(handler)
    logger.setLevel(previous)


def send(broker: Broker, events: list) -> None:
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for e in events:
        producer.send(TOPIC, key=e.key.encode(), value=e.value.encode(),
                      headers=[(k, v.encode()) for k, v in e.headers])
    producer.flush(10)
    producer.close(5)


def test_given_events_a_handler_cannot_apply_then_each_is_dead_lettered_with_its_kind_and_iop_status_shows_them(
        suite: dict[str, Proc], broker: Broker, tmp_path: Path, consumer_log: io.StringIO,
        expect_dead_letters: None, expect_handler_errors: None) -> None:
    run = uuid.uuid4().hex[:6]
    defect, poison, refused, fine = (f"pt-{what}-{run}" for what in ("defect", "poison", "refused", "fine"))
    calls: dict[str, int] = {}

    def handler(tx: Transaction, event: Event) -> None:
        calls[event.key] = calls.get(event.key, 0) + 1
        if event.key == defect:
            raise TypeError(f"cannot plan for {SECRET}")  # a bug: the handler's fault, not the event's
        if event.key == poison:
            raise PoisonMessage("this event can never be applied")
        if event.key == refused:
            raise FhirError.single(422, "the plan's period ends before it starts", expression="CarePlan.period")

    # A consumer of careplan's own store, as a worker of careplan would run it: careplan's /metrics shows its count.
    store = service_store(suite["careplan-worker"].env, "careplan")
    group = f"test-failures-{run}"
    start_at_end(broker.bootstrap, group, [TOPIC])
    events = [build_event("iop.careplan.created", BASE, key, careplan(n, key))
              for n, key in enumerate((defect, poison, refused, fine))]
    ids = {e.key: dict(e.headers)["ce_id"] for e in events}
    config = RunnerConfig(group, {"iop.careplan.created": handler}, [TOPIC], max_attempts=3, backoff_ms=10)
    runner = ConsumerRunner(store, kafka.consumer(broker.bootstrap, group, [TOPIC]),
                            partial(kafka.producer, broker.bootstrap), config)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        send(broker, events)

        def ours() -> dict:
            return {d.ce_id: d for d in dead_letters(broker.bootstrap, TOPIC)
                    if d.header("dlq_consumer_group") == group}

        letters = wait_until(lambda: len(ours()) == 3 and ours(), 60, what="three dead letters")
        wait_until(lambda: calls.get(fine) == 1, 30, what="the event after them applied")
    finally:
        stop.set()
        thread.join(30)

    assert calls[defect] == 3 and calls[poison] == 1 and calls[refused] == 1  # only the defect was tried again
    assert {key: letters[ids[key]].kind for key in (defect, poison, refused)} == \
        {defect: "handler-error", poison: "poison", refused: "refused"}
    assert letters[ids[defect]].header("dlq_error").startswith("failed after 3 attempts: TypeError")
    assert letters[ids[refused]].header("dlq_error").startswith("FhirError: 422")

    lines = [json.loads(line) for line in consumer_log.getvalue().splitlines()]
    errors = [line for line in lines if line["level"] == "error"]
    assert len(errors) == 3 and {e["msg"] for e in errors} == {"handler error"}
    for n, line in enumerate(errors, start=1):
        assert (line["error"], line["ce_id"], line["ce_type"], line["group"], line["attempt"]) == \
            ("TypeError", ids[defect], "iop.careplan.created", group, n)
        assert line["topic"] == TOPIC and "partition" in line and "offset" in line
        assert any(frame.endswith(" in handler") for frame in line["stack"])
    assert "Jane" not in consumer_log.getvalue() and "1961" not in consumer_log.getvalue()
    assert runner.handler_errors == 3

    env = service_env(tmp_path, broker.bootstrap, {"PATH": os.environ.get("PATH", "")})
    out = subprocess.run([sys.executable, "-m", "shared.cli", "status"], env=env, capture_output=True, text=True,
                         timeout=60).stdout
    dlq_line = next(line for line in out.splitlines() if line.strip().startswith("iop.careplan.events.dlq"))
    assert all(kind in dlq_line for kind in ("handler-error", "poison", "refused")), out
    assert any(group in line and "iop.careplan.created" in line and line.split()[-1] == "3"
               for line in out.splitlines()), out
    listed = subprocess.run([sys.executable, "-m", "shared.cli", "dlq", "list", TOPIC], env=env, capture_output=True,
                            text=True, check=True).stdout
    assert f"kind=handler-error  iop.careplan.created  id={ids[defect]}" in listed
