"""What went wrong with events during one test: records that reached a dead-letter topic, handler errors logged.

A window opens before the test (the end offset of every `.dlq` topic, the size of every log of a process the
tests started, the in-process handler errors seen so far) and closes after it. Before it closes, the running
suite is given time to settle (every outbox sent, every group's offsets at the end of its topics), so that
an event a test caused is judged within that test, not in the next one.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from shared.events.catalogue import ALL_TOPICS, DLQ_SUFFIX, TOPICS
from shared.events.failures import HANDLER_ERROR_LOG
from shared.status import GROUPS
from tests.support.processes import TEST_PORTS, Proc

DLQ_TOPICS = tuple(t for t in ALL_TOPICS if t.endswith(DLQ_SUFFIX))


@dataclass(frozen=True)
class Finding:
    what: str  # "dead letter" or "handler error"
    ce_id: str
    kind: str  # the DLQ kind, or the exception type of a handler error
    where: str
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.what}: ce_id={self.ce_id} kind={self.kind} {self.where} {self.reason}".rstrip()


class InProcessHandlerErrors(logging.Handler):
    """The handler errors of ConsumerRunners running inside the test process."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == HANDLER_ERROR_LOG:
            self.records.append(record)


@dataclass
class Window:
    dlq_ends: dict[TopicPartition, int]
    log_sizes: dict[Path, int]
    in_process: int
    findings: list[Finding] = field(default_factory=list)


class FailureWatch:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.in_process = InProcessHandlerErrors()
        logging.getLogger("iop.consumer").addHandler(self.in_process)  # not root: configure() resets root's

    def close(self) -> None:
        logging.getLogger("iop.consumer").removeHandler(self.in_process)

    def open(self) -> Window:
        consumer = self._consumer()
        try:
            partitions = [TopicPartition(t, p) for t in DLQ_TOPICS for p in consumer.partitions_for_topic(t) or ()]
            ends = consumer.end_offsets(partitions)
        finally:
            consumer.close()
        return Window(ends, {log: log.stat().st_size for log in _logs() if log.exists()},
                      len(self.in_process.records))

    def close_window(self, window: Window) -> list[Finding]:
        if _suite_running():
            settle(self.bootstrap)
        window.findings += self._dead_letters(window)
        window.findings += self._logged_handler_errors(window)
        window.findings += [_in_process(r) for r in self.in_process.records[window.in_process:]]
        return window.findings

    def _consumer(self) -> KafkaConsumer:
        return KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                             bootstrap_timeout_ms=10000)

    def _dead_letters(self, window: Window) -> list[Finding]:
        consumer = self._consumer()
        try:
            ends = consumer.end_offsets(list(window.dlq_ends))
            grown = {tp: start for tp, start in window.dlq_ends.items() if ends[tp] > start}
            if not grown:
                return []
            consumer.assign(list(grown))
            for tp, start in grown.items():
                consumer.seek(tp, start)
            found, deadline = [], time.monotonic() + 15
            while any(consumer.position(tp) < ends[tp] for tp in grown) and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=500).values():
                    found += [_dead_letter(r) for r in records if r.offset < ends[TopicPartition(r.topic, r.partition)]]
            return found
        finally:
            consumer.close()

    def _logged_handler_errors(self, window: Window) -> list[Finding]:
        found = []
        for log in _logs():
            if not log.exists():
                continue
            with open(log, "rb") as f:
                f.seek(window.log_sizes.get(log, 0))
                for raw in f.read().splitlines():
                    line = _json(raw)
                    if line.get("msg") == HANDLER_ERROR_LOG and line.get("level") == "error":
                        found.append(Finding("handler error", line.get("ce_id", "?"), line.get("error", "?"),
                                             f"{log.name} group={line.get('group')} ce_type={line.get('ce_type')}"))
        return found


def _logs() -> list[Path]:
    return list(dict.fromkeys(p.log for p in Proc.started))


def _json(raw: bytes) -> dict:
    try:
        line = json.loads(raw)
    except ValueError:
        return {}  # not ours: a library's or the broker's output
    return line if isinstance(line, dict) else {}


def _dead_letter(record) -> Finding:
    headers = {k: v.decode("utf-8", "replace") for k, v in record.headers or []}
    where = f"{record.topic}@{record.partition}:{record.offset} group={headers.get('dlq_consumer_group')}"
    return Finding("dead letter", headers.get("ce_id", "?"), headers.get("dlq_kind", "?"), where,
                   headers.get("dlq_error", "")[:300])


def _in_process(record: logging.LogRecord) -> Finding:
    error = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else "?"
    return Finding("handler error", getattr(record, "ce_id", "?"), error,
                   f"in this process group={getattr(record, 'group', '?')} ce_type={getattr(record, 'ce_type', '?')}")


def _suite_running() -> bool:
    return any(p.alive and p.name.endswith("-worker") and p.name.split("-")[0] in TEST_PORTS for p in Proc.started)


def settle(bootstrap: str, timeout: float = 30.0) -> None:
    """Wait until the running suite is idle: outboxes empty and every group at the end of its topics, twice running.

    Gives up quietly after `timeout`: whatever happened so far is judged all the same.
    """
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, bootstrap_timeout_ms=10000)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(t, p) for t in TOPICS for p in consumer.partitions_for_topic(t) or ()]
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            try:
                state = _idle_state(admin, consumer, partitions)
            except KafkaError:  # a loaded broker answering late: not known to be idle yet
                state = None
            if state is not None and state == last:
                return
            last = state
            time.sleep(0.1)
    finally:
        consumer.close()
        admin.close()


def _idle_state(admin: KafkaAdminClient, consumer: KafkaConsumer, partitions: list[TopicPartition]) -> tuple | None:
    """The end offsets when nothing is pending anywhere, else None."""
    for port in TEST_PORTS.values():
        try:
            metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except requests.RequestException:
            continue  # a test stopped this service on purpose
        if "\niop_outbox_backlog 0.0" not in "\n" + metrics:
            return None
    ends = consumer.end_offsets(partitions)
    for service, topics in GROUPS.items():
        group = f"iop-{service}"
        committed = admin.list_group_offsets({group: None}).get(group, {})
        if any(ends[tp] > (committed[tp].offset if tp in committed else 0) for tp in partitions if tp.topic in topics):
            return None
    return tuple(sorted((tp.topic, tp.partition, n) for tp, n in ends.items()))
