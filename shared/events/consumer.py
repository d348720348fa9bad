"""The consumer runner: exactly-once effect on top of at-least-once delivery.

For each record: parse the envelope (an invalid one goes straight to the DLQ), then in the
store transaction of its effect mark its `ce_id` applied for this group; a duplicate `ce_id` is
skipped. The records of one poll share a transaction, each effect under its own savepoint.
Offsets are committed only after the effects are stored (every `commit_every_s`, at once
after a dead letter, and before a rebalance takes a partition away).

What fails goes to `<topic>.dlq` with its kind (shared/events/failures.py), the error and its origin,
and the runner moves on. The event's own faults (an invalid envelope, `PoisonMessage`, a `FhirError`)
go at once. Anything else is retried with backoff first: a busy store or a dependency that is down
may pass, while any other exception is a defect of the handler, logged at error level with its stack
(never its message, which may quote patient data) and counted, at each attempt.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import IllegalStateError, KafkaError
from kafka.structs import OffsetAndMetadata

from shared import metrics, tracing
from shared.events import failures
from shared.events.catalogue import BY_TYPE, DLQ_SUFFIX
from shared.events.envelope import Event, InvalidEnvelope, current_trace, parse_event
from shared.events.failures import PoisonMessage
from shared.events.kafka import DELIVERY_TIMEOUT_MS, ProducerFactory, RenewableProducer
from shared.fhir.store import Store, StoreUnavailable, Transaction
from shared.logs import get_logger

log = get_logger("iop.consumer")
Handler = Callable[[Transaction, Event], None]
__all__ = ["ConsumerRunner", "Handler", "PoisonMessage", "RunnerConfig"]


class _CommitOnRevoke(ConsumerRebalanceListener):
    def __init__(self, runner: ConsumerRunner) -> None:
        self.runner = runner

    def on_partitions_revoked(self, revoked) -> None:
        try:
            self.runner.commit_revoked(set(revoked))
        except Exception as exc:  # noqa: BLE001 - the group moved on already: the next owner skips what is applied
            log.warning("commit on revoke failed", group=self.runner.config.group, error=type(exc).__name__)

    def on_partitions_assigned(self, assigned) -> None:
        pass

    def on_partitions_lost(self, lost) -> None:
        """Out of the group (its session expired): a commit would be refused, the new owner starts at the last one."""
        self.runner.forget(set(lost))


def _header(record, name: str) -> str | None:
    return next((v.decode("utf-8", "replace") for k, v in record.headers or [] if k == name), None)


STORE_BACKOFF_S = (0.2, 5.0)  # first and longest wait before the records are tried again while the store is away


@contextmanager
def _savepoint_of(tx: Transaction) -> Iterator[Transaction]:
    with tx.savepoint():
        yield tx


@dataclass
class RunnerConfig:
    group: str
    handlers: dict[str, Handler]  # by CloudEvents type; other types on the topics are skipped
    topics: list[str]
    max_attempts: int = 5
    backoff_ms: int = 200
    lag_every_s: float = 5.0
    commit_every_s: float = 0.2
    poll_ms: int = 1000  # returns as soon as records come: the timeout only paces an idle loop
    linger_ms: int = 0  # after a poll that brought records, wait this long before the next fetch
    full_validation: bool = False  # the fhir.resources model as well as the structural walk (see parse_event)


class ConsumerRunner:
    def __init__(self, store: Store, consumer: KafkaConsumer, make_producer: ProducerFactory,
                 config: RunnerConfig) -> None:
        self.store, self.consumer, self.config = store, consumer, config
        # Its own producer, made at the first dead letter: most runners never need one.
        self.producer = RenewableProducer(make_producer)
        self.applied = self.skipped = self.dead_lettered = self.handler_errors = 0
        self.store_waits = 0  # how many times the store was unavailable and the records were left to retry
        self._lag_at = 0.0
        self._lags: dict[str, str] = {}  # what record_lag last stored, per partition
        self.processed: dict[TopicPartition, OffsetAndMetadata] = {}
        self._committed: dict[TopicPartition, OffsetAndMetadata] = {}
        self._committed_at = time.monotonic()
        self._dead_lettered_since_commit = False
        # Same topics, now with a listener: what is applied is committed before a rebalance moves a partition.
        consumer.subscribe(config.topics, listener=_CommitOnRevoke(self))

    # -- one record ----------------------------------------------------------------------
    def apply(self, event: Event, tx: Transaction | None = None) -> bool:
        """Apply once; False when this group had already applied the event.

        In its own store transaction, or inside `tx` (a batch's) under a savepoint of its own.
        """
        handler = self.config.handlers.get(event.type)
        if handler is None:
            return True  # no effect to apply, so nothing to remember: no store transaction at all
        token = current_trace.set(event.traceparent)
        try:
            with tracing.span(f"process {event.type}", tracing.SpanKind.CONSUMER, event.traceparent,
                              {"messaging.system": "kafka", "messaging.consumer.group.name": self.config.group,
                               "messaging.message.id": event.id, "cloudevents.event_type": event.type}) as span, \
                    self.store.transaction() if tx is None else _savepoint_of(tx) as effect_tx:
                if not effect_tx.mark_applied(self.config.group, event.id):
                    span.set_attribute("iop.duplicate", True)
                    return False
                handler(effect_tx, event)
            return True
        finally:
            current_trace.reset(token)

    def prepare(self, record) -> Event | None:
        """The record's event, or None when there is nothing to apply (a type this group ignores, or dead-lettered)."""
        ce_type = _header(record, "ce_type") or ""
        if ce_type in BY_TYPE and ce_type not in self.config.handlers:
            return None  # a valid type of the topic that this group does not act on: not even parsed
        try:
            return parse_event(record.headers, record.key, record.value, full=self.config.full_validation)
        except InvalidEnvelope as exc:
            self.dead_letter(record, failures.INVALID_ENVELOPE, f"invalid envelope: {exc}", _header(record, "ce_id"))
            return None

    def process(self, record) -> None:
        """One record on its own: retried with backoff, dead-lettered when it cannot be applied."""
        event = self.prepare(record)
        if event is not None:
            self.process_event(record, event)

    def process_event(self, record, event: Event, failure: Exception | None = None) -> None:
        """Apply `event`, trying again with backoff what another attempt may cure, until `max_attempts`.

        `failure` is the error of a first attempt already made (inside a poll's batch).
        """
        attempt = 1
        error = failure if failure is not None else self._attempt(event)
        while error is not None:
            if isinstance(error, StoreUnavailable):
                raise error  # not the event's fault: nothing is dead-lettered or committed; run() backs off
            kind = failures.kind_of(error)
            if kind == failures.HANDLER_ERROR:
                self.handler_error(record, event, error, attempt)
            if kind in failures.CONTENT_KINDS or attempt >= self.config.max_attempts:
                after = f"failed after {attempt} attempts: " if attempt > 1 else ""
                self.dead_letter(record, kind, f"{after}{type(error).__name__}: {error}", event.id)
                return
            log.warning("handler failed, retrying", ce_id=event.id, ce_type=event.type, attempt=attempt,
                        error=type(error).__name__)
            time.sleep(self.config.backoff_ms / 1000 * 2 ** (attempt - 1))
            attempt += 1
            error = self._attempt(event)

    def _attempt(self, event: Event) -> Exception | None:
        try:
            self.count(event, self.apply(event))
        except Exception as exc:  # noqa: BLE001 - the caller decides: dead letter, or another attempt
            return exc
        return None

    def handler_error(self, record, event: Event, error: Exception, attempt: int) -> None:
        """Loud: a defect of the handler. Its type and stack are logged, never its message (it may quote PHI)."""
        self.handler_errors += 1
        log.error(failures.HANDLER_ERROR_LOG, exc_info=error, ce_id=event.id, ce_type=event.type,
                  group=self.config.group, topic=record.topic, partition=record.partition, offset=record.offset,
                  attempt=attempt, max_attempts=self.config.max_attempts)
        try:  # counted in the store: every web process of the service shows it (iop_handler_errors_total)
            with self.store.transaction() as tx:
                failures.count_handler_error(tx, self.config.group, event.type)
        except Exception as exc:  # noqa: BLE001 - the count is for the operator; the event goes on regardless
            log.warning("handler error not counted", group=self.config.group, error=type(exc).__name__)

    def count(self, event: Event, applied: bool) -> None:
        self.applied += applied
        self.skipped += not applied
        (metrics.EVENTS_APPLIED if applied else metrics.EVENTS_DUPLICATE).labels(self.config.group, event.type).inc()

    # -- the records of one poll -----------------------------------------------------------
    def process_batch(self, records: list) -> None:
        """The records of one poll, in order: their effects in as few store transactions as possible.

        Each effect runs under its own savepoint of a shared transaction. The first that fails is undone
        alone, the transaction commits the effects before it, and that record then takes the one-record
        path (retries, DLQ) before the rest continue in a new transaction. Ordering per partition holds.
        """
        ready = [(record, event) for record in records if (event := self.prepare(record)) is not None]
        while ready:
            failed, failure, results = None, None, []
            try:
                with self.store.transaction() as tx:
                    for index, (_, event) in enumerate(ready):
                        try:
                            results.append(self.apply(event, tx))
                        except Exception as exc:  # noqa: BLE001 - undone by its savepoint; settled on its own below
                            failed, failure = index, exc
                            break
            except Exception as exc:  # noqa: BLE001 - the commit itself failed: every effect is undone
                log.warning("batch commit failed; applying one by one", group=self.config.group,
                            error=type(exc).__name__)
                failed, failure, results = 0, None, []
            for (_, event), applied in zip(ready, results, strict=False):
                self.count(event, applied)
            if failed is None:
                return
            self.process_event(*ready[failed], failure)
            ready = ready[failed + 1:]

    def dead_letter(self, record, kind: str, reason: str, ce_id: str | None = None) -> None:
        headers = [(k, v) for k, v in (record.headers or []) if not k.startswith("dlq_")]
        headers += [("dlq_kind", kind.encode()), ("dlq_error", reason[:2000].encode()),
                    ("dlq_original_topic", record.topic.encode()),
                    ("dlq_original_partition", str(record.partition).encode()),
                    ("dlq_original_offset", str(record.offset).encode()),
                    ("dlq_consumer_group", self.config.group.encode()),
                    ("dlq_failed_at", datetime.now(UTC).isoformat().encode())]
        # Wait for the broker: the offset is committed right after, so this record must not be lost.
        future = self.producer.get().send(record.topic + DLQ_SUFFIX, key=record.key, value=record.value,
                                          headers=headers)
        if not self.producer.settle([future]):
            raise KafkaError(f"the dead letter to {record.topic}{DLQ_SUFFIX} was not acknowledged")
        self.dead_lettered += 1
        self._dead_lettered_since_commit = True
        metrics.EVENTS_DEAD_LETTERED.labels(self.config.group, record.topic, kind).inc()
        # The reason stays in the DLQ with the event: it may quote the event's content, so it is not logged.
        log.warning("event dead-lettered", ce_id=ce_id, kind=kind, group=self.config.group, topic=record.topic,
                    partition=record.partition, offset=record.offset)

    # -- the loop ------------------------------------------------------------------------
    def poll_once(self, timeout_ms: int = 200, stop: threading.Event | None = None) -> int:
        batches = self.consumer.poll(timeout_ms=timeout_ms)
        records = [record for part in batches.values() for record in part]
        for tp, part in batches.items():
            metrics.EVENTS_CONSUMED.labels(self.config.group, tp.topic).inc(len(part))
        if stop is not None and stop.is_set():
            records = []  # fetched but not applied: never committed, so the group's next member gets them
        try:
            self.process_batch(records)
        except BaseException:
            # Not every record is settled (a DLQ send failed, the broker went away): fetch them all again.
            # What was applied is skipped as a duplicate; nothing fetched is passed over.
            for tp, part in batches.items():
                with suppress(IllegalStateError):  # no longer ours: the next owner starts at its commit
                    self.consumer.seek(tp, part[0].offset)
            raise
        for record in records:
            self.processed[TopicPartition(record.topic, record.partition)] = OffsetAndMetadata(record.offset + 1,
                                                                                               "", -1)
        # A dead letter is not deduplicated like an effect: commit it now, so no redelivery sends it twice.
        self.commit(force=self._dead_lettered_since_commit)
        self._dead_lettered_since_commit = False
        self.record_lag()
        if records and self.config.linger_ms:
            # Busy: let the next records gather in the broker, to be fetched together rather than one by one.
            (stop.wait if stop is not None else time.sleep)(self.config.linger_ms / 1000)
        return len(records)

    def commit_revoked(self, revoked: set[TopicPartition]) -> None:
        """Called inside the consumer's network loop, where a blocking commit cannot run: sent before the rejoin."""
        pending = {tp: om for tp, om in self.processed.items() if tp in revoked and self._committed.get(tp) != om}
        if pending:
            self.consumer.commit_async(pending)
        self.forget(revoked)

    def forget(self, partitions: set[TopicPartition]) -> None:
        """No longer ours: what was applied there is another member's to commit (or to skip as a duplicate)."""
        for tp in partitions:
            self.processed.pop(tp, None)
            self._committed.pop(tp, None)
        self._lags.clear()  # another member may write these partitions' lag meanwhile: write ours anew on return

    def commit(self, force: bool) -> None:
        """Commit the offsets of what is applied: at most every `commit_every_s`, or now when `force`d.

        Effects are stored and deduplicated by ce_id, so a commit may lag behind them: a crash before it
        only means redeliveries that are skipped. Batching commits spares the broker a request per poll.
        """
        assigned = self.consumer.assignment()
        pending = {tp: om for tp, om in self.processed.items() if tp in assigned and self._committed.get(tp) != om}
        if not pending:
            return
        if force:
            self.consumer.commit(pending)
        elif time.monotonic() - self._committed_at >= self.config.commit_every_s:
            self.consumer.commit_async(pending, callback=self._commit_done)
        else:
            return
        self._committed.update(pending)
        self._committed_at = time.monotonic()

    def _commit_done(self, offsets: dict[TopicPartition, OffsetAndMetadata], response: object) -> None:
        """An async commit that failed (a rebalance under way, the broker gone) is offered again next time."""
        if isinstance(response, Exception):
            for tp, om in offsets.items():
                if self._committed.get(tp) == om:
                    self._committed.pop(tp, None)

    def record_lag(self) -> None:
        if time.monotonic() - self._lag_at < self.config.lag_every_s:
            return
        self._lag_at = time.monotonic()
        assigned = self.consumer.assignment()
        if not assigned:
            return
        ends = self.consumer.end_offsets(list(assigned))
        lags = {f"lag:{self.config.group}:{tp.topic}:{tp.partition}":
                str(max(0, ends.get(tp, 0) - self.consumer.position(tp))) for tp in assigned}
        changed = {name: lag for name, lag in lags.items() if self._lags.get(name) != lag}
        if not changed:
            return  # an idle group writes nothing: no commit, no wake-up of the store's watchers
        # Per partition, in the store: any web process of the service shows it as iop_consumer_lag.
        with self.store.transaction() as tx:
            for name, lag in changed.items():
                tx.put_value(name, lag)
        self._lags.update(changed)

    def run(self, stop: threading.Event) -> None:
        """Until `stop`: poll, apply, commit. On stop, the record in hand is finished and committed."""
        log.info("consumer started", group=self.config.group, topics=",".join(self.config.topics))
        store_backoff = 0.0
        try:
            while not stop.is_set():
                try:
                    self.poll_once(self.config.poll_ms, stop)
                    store_backoff = 0.0
                except StoreUnavailable as exc:
                    # The records of this poll are fetched again from their first offset once the store is back.
                    self.store_waits += 1
                    metrics.STORE_UNAVAILABLE.labels(self.config.group).inc()
                    store_backoff = min(max(store_backoff * 2, STORE_BACKOFF_S[0]), STORE_BACKOFF_S[1])
                    log.warning("store unavailable, retrying the same records", group=self.config.group,
                                reason=exc.reason, backoff_s=store_backoff)
                    stop.wait(store_backoff)
                except Exception as exc:  # noqa: BLE001 - broker restart, rebalance: keep going
                    log.warning("consumer loop error", group=self.config.group, error=type(exc).__name__)
                    stop.wait(1.0)
        finally:
            try:
                self.commit(force=True)  # what is applied is committed before the group is left
            except Exception:  # noqa: BLE001 - no assignment or broker gone: the dedupe covers a redelivery
                pass
            self.consumer.close()  # leaves the group, so partitions move at once
            self.producer.close(DELIVERY_TIMEOUT_MS / 1000)
            log.info("consumer stopped", group=self.config.group, applied=self.applied, skipped=self.skipped)
