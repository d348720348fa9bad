"""The producer benchmark compares what it says it does, and the idle figures' clock counts a thread's time."""
from __future__ import annotations

import os
import threading
import time

from bench.measure import oncpu_s
from bench.produce import KAFKA_PYTHON_DEFAULT_BATCH, planned_round
from shared.events import kafka
from shared.events.envelope import parse_event


def test_a_round_needs_two_default_batches_and_fits_one_of_the_suites() -> None:
    rows = planned_round(3)
    size = sum(len(e.key) + len(e.value) + sum(len(k) + len(v) for k, v in e.headers) for e in rows)
    assert len(rows) == 9 and len({e.key for e in rows}) == 1  # one patient: one partition
    assert KAFKA_PYTHON_DEFAULT_BATCH < size < kafka.PRODUCER_BATCH_BYTES


def test_the_rounds_events_are_valid_planned_encounters() -> None:
    for row in planned_round(1):
        event = parse_event([(k, v.encode()) for k, v in row.headers], row.key.encode(), row.value.encode())
        assert event.type == "iop.encounter.planned"
        assert event.bundle["entry"][0]["resource"]["status"] == "planned"


def test_oncpu_counts_the_time_a_thread_spent_running() -> None:
    spent, done = threading.Event(), threading.Event()

    def spin() -> None:
        started = time.thread_time()
        while not done.is_set():
            if time.thread_time() - started >= 0.05:
                spent.set()

    before = oncpu_s(os.getpid())
    worker = threading.Thread(target=spin)
    worker.start()
    try:
        assert spent.wait(30)
        during = oncpu_s(os.getpid())  # while the thread still runs: an ended thread takes its time with it
    finally:
        done.set()
        worker.join()
    assert during - before >= 0.05
    assert oncpu_s(2**22 + 7) == 0.0  # no such process
