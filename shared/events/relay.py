"""The outbox relay: publishes committed outbox rows to Kafka, in commit order.

It runs as a thread of the service's worker process, next to the consumers: the worker is
the one long-lived process per service, so the relay needs no extra process and survives
web restarts. It notices commits within milliseconds by watching SQLite's `data_version`
(which changes whenever another connection commits) instead of polling the table every few
seconds. A lease in the store lets only one relay publish when workers are scaled out, so
per-patient order holds. A crash between publish and mark-sent republishes those rows:
at-least-once on the wire, and consumers skip the duplicate `ce_id`.
"""
from __future__ import annotations

import os
import socket
import threading
import time

from kafka import KafkaProducer
from kafka.errors import KafkaError

from shared.fhir.store import SQLiteStore
from shared.logs import get_logger
from shared.metrics import Metrics

log = get_logger("iop.relay")
LEASE = "relay-lease"
LEASE_SECONDS = 5.0
BATCH = 500


class OutboxRelay:
    def __init__(self, store: SQLiteStore, producer: KafkaProducer, poll_ms: int = 5,
                 metrics: Metrics | None = None) -> None:
        self.store, self.producer = store, producer
        self.poll_s = poll_ms / 1000
        self.metrics = metrics or Metrics()
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
        futures = []
        for row in rows:
            headers = [(k, v.encode("utf-8")) for k, v in row.headers]
            futures.append(self.producer.send(row.topic, key=row.key.encode("utf-8"),
                                              value=row.value.encode("utf-8"), headers=headers))
        self.producer.flush(timeout=30)
        acknowledged = []
        for row, fut in zip(rows, futures, strict=True):
            if not fut.succeeded():
                break
            acknowledged.append(row.seq)
        self.store.mark_sent(acknowledged)
        self.published += len(acknowledged)
        self.metrics.inc("iop_outbox_published_total", by=len(acknowledged))
        if len(acknowledged) < len(rows):
            raise KafkaError(f"{len(rows) - len(acknowledged)} outbox rows not acknowledged; will retry")
        return len(rows)

    def run(self, stop: threading.Event) -> None:
        last_version, lease_checked, backoff = None, 0.0, 0.0
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
                backoff = min(max(backoff * 2, 0.1), 5.0)
                last_version = None
                log.warning("relay retrying", error=type(exc).__name__, backoff_s=backoff)
                stop.wait(backoff)
                continue
            stop.wait(self.poll_s)
