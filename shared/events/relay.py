"""The outbox relay: publishes committed outbox rows to Kafka, in commit order.

It runs as a thread of the service's worker process, next to the consumers: the worker is
the one long-lived process per service, so the relay needs no extra process and survives
web restarts. It notices commits within milliseconds by watching SQLite's `data_version`
(which changes whenever another connection commits) instead of polling the table every few
seconds. A lease in the store (shared/replicas.py) lets only one relay publish when workers are scaled out,
so per-patient order holds: a standby takes over within IOP_RELAY_LEASE_S of the holder's death, and the
marks of a deposed relay are refused by its fence, so it stops. A crash between publish and mark-sent
republishes those rows: at-least-once on the wire, and consumers skip the duplicate `ce_id`.

The relay owns its producer. A batch that the broker did not fully acknowledge (an outage, however
long) replaces it, and the rows from the first unacknowledged one on are sent again by the new one,
in commit order, once the broker answers: no attempt waits longer than the producer's delivery timeout.
"""
from __future__ import annotations

import threading
import time

from kafka.errors import KafkaError

from shared import tracing
from shared.events.kafka import ProducerFactory, RenewableProducer
from shared.fhir.store import Store
from shared.logs import get_logger
from shared.metrics import OUTBOX_PUBLISHED
from shared.replicas import Lease, holder_id

log = get_logger("iop.relay")
LEASE = "outbox-relay"
LEASE_SECONDS = 5.0
BATCH = 500
MAX_BACKOFF_S = 2.0


class Deposed(Exception):
    """Another relay holds the lease now: this one's marks were refused and it stops publishing."""


def _published_headers(topic: str, headers: list[tuple[str, str]]) -> list[tuple[str, bytes]]:
    """The row's headers, its `traceparent` now naming the span of its publication (a child of its cause's)."""
    cause = next((v for k, v in headers if k == "traceparent"), None)
    with tracing.span(f"publish {topic}", tracing.SpanKind.PRODUCER, cause,
                      {"messaging.system": "kafka", "messaging.destination.name": topic}):
        sent = tracing.traceparent() or cause
    return [(k, (sent if k == "traceparent" and sent else v).encode("utf-8")) for k, v in headers]


class OutboxRelay:
    def __init__(self, store: Store, make_producer: ProducerFactory, poll_ms: int = 5,
                 lease_s: float = LEASE_SECONDS) -> None:
        self.store, self.producer = store, RenewableProducer(make_producer)
        self.poll_s = poll_ms / 1000
        self.owner = holder_id(self)
        self.lease = Lease(store, LEASE, self.owner, lease_s)
        self.published = 0
        self.terms = 0  # how many times this relay became the publishing one
        self.scans = 0  # how many times it looked for unsent rows

    def publish_pending(self) -> int:
        """Send every unsent row; mark sent the prefix that the broker acknowledged (fenced by the lease when this
        relay holds one: a deposed relay marks nothing and raises Deposed)."""
        rows = self.store.unsent_events(BATCH)
        self.scans += 1
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
        seqs = [row.seq for row in rows[:acknowledged]]
        fence = self.lease.fence
        if fence is None:
            self.store.mark_sent(seqs)
        elif seqs and not self.store.mark_sent_fenced(seqs, LEASE, self.owner, fence):
            self.lease.lost()
            raise Deposed(f"{len(seqs)} rows published after the lease moved on; their new relay sends them again")
        self.published += acknowledged
        OUTBOX_PUBLISHED.inc(acknowledged)
        if acknowledged < len(rows):
            raise KafkaError(f"{len(rows) - acknowledged} outbox rows not acknowledged; will retry")
        return len(rows)

    def _lead(self) -> bool:
        """Take or renew the lease; logs each change of leadership."""
        was = self.lease.held
        leads = self.lease.acquire()
        if leads and not was:
            self.terms += 1
            log.info("relay publishes", fence=self.lease.fence)
        elif was and not leads:
            log.warning("relay lost its lease; another replica publishes")
        return leads

    def _keep_lease(self, stop: threading.Event) -> None:
        """Renew a held lease on time even while a batch waits for the broker (up to its delivery timeout):
        the lease says that this process is alive, so only its death (or a stall longer than the lease)
        lets a standby take over."""
        while not stop.wait(self.lease.renew_every_s):
            try:
                if self.lease.held and not self.lease.renew():
                    log.warning("relay lost its lease; another replica publishes")
            except Exception as exc:  # noqa: BLE001 - the store is busy or away: the next round tries again
                log.warning("relay lease not renewed", error=type(exc).__name__)

    def run(self, stop: threading.Event) -> None:
        """Publish while holding the lease (taken here, renewed by the keeper thread); wake on each commit (the
        store's commit watch), and give it up on a clean stop so a standby takes over at once."""
        keeper = threading.Thread(target=self._keep_lease, args=(stop,), name="relay-lease", daemon=True)
        keeper.start()
        watch = self.store.commit_watch(self.poll_s)
        watch.wait(stop, 0)  # from here on, every commit rings
        renew_due, backoff, rescan = 0.0, 0.0, True
        try:
            while not stop.is_set():
                try:
                    if time.monotonic() >= renew_due:
                        # A held lease is the keeper's to renew: one renewal per period, not one from each thread.
                        leads = self.lease.held or self._lead()
                        renew_due = time.monotonic() + self.lease.renew_every_s
                        rescan = rescan or leads  # each period re-scans too: the fallback to the doorbell
                    if self.lease.held and rescan:
                        rescan = self.publish_pending() == BATCH  # a full batch: more is waiting
                    backoff = 0.0
                except Deposed as exc:
                    log.warning("relay deposed", reason=str(exc))
                    renew_due = 0.0
                    continue
                except Exception as exc:  # noqa: BLE001 - broker down or store busy: retry with backoff
                    backoff = min(max(backoff * 2, 0.1), MAX_BACKOFF_S)
                    rescan = True
                    log.warning("relay retrying", error=type(exc).__name__, backoff_s=backoff,
                                producers_replaced=self.producer.renewals)
                    stop.wait(backoff)
                    continue
                if not rescan:
                    # The doorbell: returns at the next commit of another connection, or in time to renew.
                    rescan = watch.wait(stop, max(renew_due - time.monotonic(), 0.0))
        finally:
            watch.close()
            keeper.join(5)
            self.producer.close(10)
            try:
                self.lease.release()
            except Exception:  # noqa: BLE001 - the store is away: the lease simply expires
                log.warning("relay could not release its lease", exc_info=True)
