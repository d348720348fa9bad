"""The consumer runner: exactly-once effect on top of at-least-once delivery.

For each record: parse the envelope (an invalid one goes straight to the DLQ), then in ONE
store transaction mark its `ce_id` applied for this group and apply the handler's effect;
a duplicate `ce_id` is skipped. Offsets are committed only after the effects are stored.
A handler error is retried with backoff; after the last attempt the record goes to
`<topic>.dlq` with the error and its origin, and the runner moves on.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from shared.events.catalogue import BY_TYPE, DLQ_SUFFIX
from shared.events.envelope import Event, InvalidEnvelope, current_trace, parse_event
from shared.fhir.outcome import FhirError
from shared.fhir.store import SQLiteStore, Transaction
from shared.logs import get_logger
from shared.metrics import Metrics

log = get_logger("iop.consumer")
Handler = Callable[[Transaction, Event], None]


class PoisonMessage(Exception):
    """A handler's verdict that an event can never be applied as it is: no retry, straight to the DLQ."""


@dataclass
class RunnerConfig:
    group: str
    handlers: dict[str, Handler]  # by CloudEvents type; other types on the topics are skipped
    topics: list[str]
    max_attempts: int = 5
    backoff_ms: int = 200
    lag_every_s: float = 5.0


class ConsumerRunner:
    def __init__(self, store: SQLiteStore, consumer: KafkaConsumer, producer: KafkaProducer,
                 config: RunnerConfig, metrics: Metrics | None = None) -> None:
        self.store, self.consumer, self.producer, self.config = store, consumer, producer, config
        self.metrics = metrics or Metrics()
        self.applied = self.skipped = self.dead_lettered = 0
        self._lag_at = 0.0

    # -- one record ----------------------------------------------------------------------
    def apply(self, event: Event) -> bool:
        """Apply once; False when this group had already applied the event."""
        handler = self.config.handlers.get(event.type)
        if handler is None:
            return True  # no effect to apply, so nothing to remember: no store transaction at all
        token = current_trace.set(event.traceparent)
        try:
            with self.store.transaction() as tx:
                if not tx.mark_applied(self.config.group, event.id):
                    return False
                handler(tx, event)
            return True
        finally:
            current_trace.reset(token)

    def process(self, record) -> None:
        ce_type = next((v for k, v in record.headers or [] if k == "ce_type"), b"").decode("utf-8", "replace")
        if ce_type in BY_TYPE and ce_type not in self.config.handlers:
            return  # a valid type of the topic that this group does not act on: not even parsed
        try:
            event = parse_event(record.headers, record.key, record.value)
        except InvalidEnvelope as exc:
            self.dead_letter(record, f"invalid envelope: {exc}")
            return
        last_error = ""
        for attempt in range(1, self.config.max_attempts + 1):
            try:
                applied = self.apply(event)
                self.applied += applied
                self.skipped += not applied
                self.metrics.inc("iop_events_consumed_total",
                                 {"group": self.config.group, "result": "applied" if applied else "duplicate"})
                return
            except (PoisonMessage, FhirError, ValueError, KeyError, TypeError) as exc:
                # The event's content is at fault, not the moment: retrying cannot help.
                self.dead_letter(record, f"{type(exc).__name__}: {exc}", event.id)
                return
            except Exception as exc:  # noqa: BLE001 - transient (store busy, dependency down): retry
                last_error = f"{type(exc).__name__}: {exc}"
                log.warning("handler failed, retrying", ce_id=event.id, ce_type=event.type, attempt=attempt,
                            error=type(exc).__name__)
                time.sleep(self.config.backoff_ms / 1000 * 2 ** (attempt - 1))
        self.dead_letter(record, f"failed after {self.config.max_attempts} attempts: {last_error}", event.id)

    def dead_letter(self, record, reason: str, ce_id: str | None = None) -> None:
        headers = [(k, v) for k, v in (record.headers or []) if not k.startswith("dlq_")]
        headers += [("dlq_error", reason[:2000].encode()), ("dlq_original_topic", record.topic.encode()),
                    ("dlq_original_partition", str(record.partition).encode()),
                    ("dlq_original_offset", str(record.offset).encode()),
                    ("dlq_consumer_group", self.config.group.encode()),
                    ("dlq_failed_at", datetime.now(UTC).isoformat().encode())]
        # Wait for the broker: the offset is committed right after, so this record must not be lost.
        self.producer.send(record.topic + DLQ_SUFFIX, key=record.key, value=record.value, headers=headers).get(30)
        self.dead_lettered += 1
        self.metrics.inc("iop_events_dead_lettered_total", {"group": self.config.group, "topic": record.topic})
        log.warning("event dead-lettered", ce_id=ce_id, topic=record.topic, partition=record.partition,
                    offset=record.offset, reason=reason[:300])

    # -- the loop ------------------------------------------------------------------------
    def poll_once(self, timeout_ms: int = 200, stop: threading.Event | None = None) -> int:
        batches = self.consumer.poll(timeout_ms=timeout_ms)
        done: dict[TopicPartition, OffsetAndMetadata] = {}
        count = 0
        try:
            for tp, records in batches.items():
                for record in records:
                    if stop is not None and stop.is_set() and count:
                        return count
                    self.process(record)
                    done[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
                    count += 1
        finally:
            if done:
                # Effects are stored (and deduplicated by ce_id), so the commit need not block the next record;
                # a commit lost in a crash only means a redelivery that is skipped.
                self.consumer.commit_async(done)
        self.record_lag()
        return count

    def record_lag(self) -> None:
        if time.monotonic() - self._lag_at < self.config.lag_every_s:
            return
        self._lag_at = time.monotonic()
        assigned = self.consumer.assignment()
        if not assigned:
            return
        ends = self.consumer.end_offsets(list(assigned))
        per_topic: dict[str, int] = {}
        for tp in assigned:
            position = self.consumer.position(tp)
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(0, ends.get(tp, 0) - position)
        with self.store.transaction() as tx:
            for topic, lag in per_topic.items():
                tx.put_value(f"lag:{self.config.group}:{topic}", str(lag))

    def run(self, stop: threading.Event) -> None:
        """Until `stop`: poll, apply, commit. On stop, the record in hand is finished and committed."""
        log.info("consumer started", group=self.config.group, topics=",".join(self.config.topics))
        try:
            while not stop.is_set():
                try:
                    self.poll_once(200, stop)
                except Exception as exc:  # noqa: BLE001 - broker restart, rebalance: keep going
                    log.warning("consumer loop error", group=self.config.group, error=type(exc).__name__)
                    stop.wait(1.0)
        finally:
            try:
                self.consumer.commit()  # what is applied is committed before the group is left
            except Exception:  # noqa: BLE001 - no assignment or broker gone: the dedupe covers a redelivery
                pass
            self.consumer.close()  # leaves the group, so partitions move at once
            log.info("consumer stopped", group=self.config.group, applied=self.applied, skipped=self.skipped)
