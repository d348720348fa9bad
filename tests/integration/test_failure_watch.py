"""The check that runs after every broker test: an undeclared dead letter or handler error fails the test."""
from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import ROOT
from tests.support.broker import Broker
from tests.support.postgres import store_locator

INNER_TESTS = '''
import os
import threading
import uuid
from functools import partial

from shared.events import kafka
from shared.events.consumer import ConsumerRunner, PoisonMessage, RunnerConfig
from shared.events.dlq import dead_letters
from shared.events.envelope import build_event
from shared.fhir.store import open_store
from tests.integration.test_event_backbone import BASE, TOPIC, careplan, send_raw
from tests.support.events import start_at_end
from tests.support.waiting import wait_until


def consume_one(broker, tmp_path, failure):
    """One event through a consumer whose handler raises `failure`: dead-lettered after one attempt."""
    group = f"inner-{uuid.uuid4().hex[:8]}"
    start_at_end(broker.bootstrap, group, [TOPIC])

    def handler(tx, event):
        raise failure

    config = RunnerConfig(group, {"iop.careplan.created": handler}, [TOPIC], max_attempts=1)
    runner = ConsumerRunner(open_store(os.environ["INNER_STORE"]), kafka.consumer(broker.bootstrap, group, [TOPIC]),
                            partial(kafka.producer, broker.bootstrap), config)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    event = build_event("iop.careplan.created", BASE, "pt-inner", careplan(1, "pt-inner"))
    send_raw(broker, event.key, event.headers, event.value)
    try:
        wait_until(lambda: any(d.header("dlq_consumer_group") == group
                               for d in dead_letters(broker.bootstrap, TOPIC)), 60, what="the dead letter")
    finally:
        stop.set()
        thread.join(30)


def test_poison_undeclared(broker, tmp_path):
    consume_one(broker, tmp_path, PoisonMessage("never"))


def test_poison_declared(broker, tmp_path, expect_dead_letters):
    consume_one(broker, tmp_path, PoisonMessage("never"))


def test_declared_but_nothing_happens(broker, expect_dead_letters):
    pass


def test_handler_error_with_only_its_dead_letter_declared(broker, tmp_path, expect_dead_letters):
    consume_one(broker, tmp_path, TypeError("a bug"))


def test_handler_error_declared(broker, tmp_path, expect_dead_letters, expect_handler_errors):
    consume_one(broker, tmp_path, TypeError("a bug"))
'''


def test_a_test_that_dead_letters_or_meets_a_handler_error_without_declaring_it_fails(
        pytester: pytest.Pytester, broker: Broker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        expect_dead_letters: None) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap)  # the inner run uses this broker, starts none
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("INNER_STORE", store_locator(tmp_path / "effects.db"))  # on this run's engine and server
    pytester.makeconftest("from tests.conftest import *  # noqa: F403\n")
    pytester.makepyfile(test_inner=INNER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=5, errors=3)
    errors = "\n".join(line for line in result.outlines if line.startswith("ERROR"))
    assert "test_poison_undeclared" in errors and "test_declared_but_nothing_happens" in errors
    assert "test_handler_error_with_only_its_dead_letter_declared" in errors
    result.stdout.fnmatch_lines(["*dead letter: ce_id=* kind=poison *group=inner-*",
                                 "*the test declares expect_dead_letters, but no dead letter happened*",
                                 "*handler error: ce_id=* kind=TypeError in this process group=inner-*"])
