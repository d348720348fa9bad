"""The outbox relay: publishes committed outbox rows to Kafka, in commit order.

It runs as a thread of the service's worker process, next to the consumers: the worker is
the one long-lived process per service, so the relay needs no extra process and survives
web restarts. It notices commits within milliseconds by watching SQLite's `data_version`
(which changes whenever another connection commits) instead of polling the table every few
seconds. A lease in the store lets only one relay publish when workers are scaled out, so
per-patient order holds. A crash between publish and mark-sent republishes those rows:
at-least-once on the wire, and consumers skip the duplicate `ce_id`.

The relay owns its producer. A batch that the broker did not fully acknowledge (an outage, however
long) replaces it, and the rows from the first unacknowledged one on are sent again by the new one,
in commit order, once the broker answers: no attempt waits longer than the producer's delivery timeout.
"""
from __future__ import annotations

import os
import socket
import threading
import time

from kafka.errors import KafkaError

from shared import tracing
from shared.events.kafka import ProducerFactory, RenewableProducer
from shared.fhir.store import Store
from shared.logs import get_logger
from shared.metrics import OUTBOX_PUBLISHED

log = get_logger("iop.relay")
LEASE = "relay-lease"
LEASE_SECONDS = 5.0
BATCH = 500
MAX_BACKOFF_S = 2.0


def _published_headers(topic: str, headers: list[tuple[str, str]]) -> list[tuple[str, bytes]]:
    """The row's headers, its `traceparent` now naming the span of its publication (a child of its cause's)."""
    cause = next((v for k, v in headers if k == "traceparent"), None)
    with tracing.span(f"publish {topic}", tracing.SpanKind.PRODUCER, cause,
                      {"messaging.system": "kafka", "messaging.destination.name": topic}):
        sent = tracing.traceparent() or cause
    return [(k, (sent if k == "traceparent" and sent else v).encode("utf-8")) for k, v in headers]


class OutboxRelay:
    def __init__(self, store: Store, make_producer: ProducerFactory, poll_ms: int = 5) -> None:
        self.store, self.producer = store, RenewableProducer(make_producer)
        self.poll_s = poll_ms / 1000
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self.published = 0

    def _hold_lease(self) -> bool:
        now = time.time()
        with self.store.transaction() as tx:
            lease = tx.get_value(LEASE)
            if lease:
                holder, _, expires = lease.rpartition("@")
                if holder != self.owner and float(expires) > now:
                    return False
            tx.put_value(LEASE, f"{self.owner}@{now + LEASE_SECONDS}")
        return True

    def publish_pending(self) -> int:
        """Send every unsent row; mark sent the prefix that the broker acknowledged."""
        rows = self.store.unsent_events(BATCH)
        if not rows:
            return 0
        producer, futures, refused = self.producer.get(), [], False
        for row in rows:
            headers = _published_headers(row.topic, row.headers)
            try:
                futures.append(producer.send(row.topic, key=row.key.encode("utf-8"),
                                             value=row.value.encode("utf-8"), headers=headers))
            except KafkaError:  # no metadata within max_block: the broker is away
                refused = True
                break
        acknowledged = self.producer.settle(futures)
        if refused:
            self.producer.renew()
        self.store.mark_sent([row.seq for row in rows[:acknowledged]])
        self.published += acknowledged
        OUTBOX_PUBLISHED.inc(acknowledged)
        if acknowledged < len(rows):
            raise KafkaError(f"{len(rows) - acknowledged} outbox rows not acknowledged; will retry")
        return len(rows)

    def run(self, stop: threading.Event) -> None:
        last_version, lease_checked, backoff, leader = None, 0.0, 0.0, False
        try:
            while not stop.is_set():
                try:
                    now = time.monotonic()
                    if now - lease_checked > LEASE_SECONDS / 3:
                        leader, lease_checked = self._hold_lease(), now
                        last_version = None  # re-scan after each lease renewal: catches anything missed
                    if leader:
                        version = self.store.data_version()
                        if version != last_version:
                            last_version = version
                            while self.publish_pending() == BATCH:
                                pass
                    backoff = 0.0
                except Exception as exc:  # noqa: BLE001 - broker down or store busy: retry with backoff
                    backoff = min(max(backoff * 2, 0.1), MAX_BACKOFF_S)
                    last_version = None
                    log.warning("relay retrying", error=type(exc).__name__, backoff_s=backoff,
                                producers_replaced=self.producer.renewals)
                    stop.wait(backoff)
                    continue
                stop.wait(self.poll_s)
        finally:
            self.producer.close(10)
