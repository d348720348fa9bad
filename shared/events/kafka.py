"""Kafka clients configured the way the contract needs them."""
from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress

from kafka import KafkaConsumer, KafkaProducer
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.errors import KafkaError, KafkaTimeoutError

from shared.config import env_int, env_str

# Every send is settled (acknowledged or failed) within this, so a caller never waits longer for a verdict
# (IOP_KAFKA_DELIVERY_TIMEOUT_MS; each request to a broker may take half of it).
DELIVERY_TIMEOUT_MS = env_int("IOP_KAFKA_DELIVERY_TIMEOUT_MS", 10000)
# A consumer not heard from for this long is out of its group, and its partitions go to the others.
SESSION_TIMEOUT_MS = 10000
# How long the broker holds a fetch that finds nothing new: it answers at once when a record comes, so this only
# sets how often an idle consumer asks again (each ask costs the consumer and the broker a request).
FETCH_MAX_WAIT_MS = 3000
# The most a producer puts in one partition's batch (a record larger than this goes alone). Under the broker's
# message.max.bytes and the producer's max_request_size (1 MiB each by default).
PRODUCER_BATCH_BYTES = 256 * 1024
ProducerFactory = Callable[[], KafkaProducer]


class StopOnFailure(KafkaProducer):
    """A producer that sends nothing more once one of its sends failed.

    kafka-python starts a new idempotent sequence after a batch expired (a leader gone for longer than the
    delivery timeout, say), and then sends the batches queued behind it: a partition's later records would
    reach the log before the caller sends the failed one again, and a patient's events would be out of order.
    So the first failure stops the sender at once: what it has not sent fails too, and the caller sends it all
    again, in order, through a new producer (RenewableProducer). One request in flight per broker keeps a
    partition's next batch back until the one before is settled.
    """

    def send(self, *args, **kwargs):
        future = super().send(*args, **kwargs)
        future.add_errback(self._stop_sending)
        return future

    def _stop_sending(self, _error: Exception) -> None:
        sender = getattr(self, "_sender", None)
        if sender is not None:
            sender.force_close()


def producer(servers: str, **overrides: object) -> KafkaProducer:
    """Idempotent, acks=all: a retried send never writes a record twice to the log, nor out of order.

    Bounded everywhere, so that a broker outage costs a caller seconds per attempt, not minutes: finding the
    broker (bootstrap), waiting for a topic's metadata (max_block) and settling a send (delivery timeout).
    kafka-python's own metrics are off in every client: nothing reads them, and they cost a send about a sixth
    of its CPU. A partition's batch holds up to PRODUCER_BATCH_BYTES: a relay's round of rows (the nine planned
    Encounters of a plan are 20 kB) goes in one produce request, not one per 16 kB (kafka-python's default), each
    waiting for the one before.
    """
    config: dict = dict(bootstrap_servers=servers, acks="all", enable_idempotence=True, linger_ms=1,
                        batch_size=PRODUCER_BATCH_BYTES, metrics_enabled=False,
                        max_in_flight_requests_per_connection=1, retries=2**31 - 1,
                        request_timeout_ms=DELIVERY_TIMEOUT_MS // 2, delivery_timeout_ms=DELIVERY_TIMEOUT_MS,
                        reconnect_backoff_max_ms=1000, bootstrap_timeout_ms=5000, max_block_ms=5000)
    config.update(overrides)
    return StopOnFailure(**config)


class RenewableProducer:
    """One producer at a time, made on first use and replaced after a send that was not acknowledged.

    kafka-python's idempotent producer does not come back from expired batches (a broker away for longer
    than the delivery timeout): its session is broken and every later flush times out. A fresh producer
    starts a new session; what the old one did not get acknowledged is sent again by its caller.
    """

    def __init__(self, make: ProducerFactory) -> None:
        self._make = make
        self._producer: KafkaProducer | None = None
        self.renewals = 0

    def get(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = self._make()
        return self._producer

    def settle(self, futures: Sequence, timeout_s: float = DELIVERY_TIMEOUT_MS / 1000 + 5) -> int:
        """Wait until every send is acknowledged or failed; the number acknowledged before the first that was not.

        Anything short of all replaces the producer, so that the caller's next attempt starts a new session.
        """
        deadline = time.monotonic() + timeout_s
        for future in futures:
            with suppress(Exception):  # noqa: BLE001 - the verdict is read from the future below
                future.get(max(0.0, deadline - time.monotonic()))
        acknowledged = next((i for i, future in enumerate(futures) if not future.succeeded()), len(futures))
        if acknowledged < len(futures):
            self.renew()
        return acknowledged

    def renew(self) -> None:
        """Drop the current producer; the next `get` makes a new one."""
        old, self._producer = self._producer, None
        if old is None:
            return
        self.renewals += 1
        try:
            old.close(0)
        except KafkaTimeoutError:
            # Sends still pending (settle waits for them, so only after its deadline): they fail by their
            # delivery timeout, and only then can the producer close.
            threading.Thread(target=_close_quietly, args=(old, DELIVERY_TIMEOUT_MS / 1000 * 2), daemon=True).start()

    def close(self, timeout_s: float = 10) -> None:
        old, self._producer = self._producer, None
        if old is not None:
            _close_quietly(old, timeout_s)


def _close_quietly(old: KafkaProducer, timeout_s: float) -> None:
    with suppress(KafkaError):  # sends not settled by then: nothing waits for them any more
        old.close(timeout_s)


def membership(group: str) -> dict[str, object]:
    """How a consumer of `group` joins it: static under IOP_REPLICA, dynamic without; a client id of its own.

    Cooperative-sticky assignment: a replica that joins or leaves moves only the partitions it takes or gives
    up, and the other members keep consuming theirs through the rebalance. A static member (`group_instance_id`
    = IOP_REPLICA) that restarts within the session timeout gets its partitions back without a rebalance; one
    that stops or dies gives them up after the session timeout (IOP_KAFKA_SESSION_TIMEOUT_MS). A member
    heartbeats every quarter of its session: a lost heartbeat or two does not cost it its partitions, the others
    hear of a rebalance within one heartbeat, and an idle group asks little of the broker.
    """
    replica = env_str("IOP_REPLICA", "").strip()
    session_ms = env_int("IOP_KAFKA_SESSION_TIMEOUT_MS", SESSION_TIMEOUT_MS)
    return dict(partition_assignment_strategy=[CooperativeStickyAssignor], group_instance_id=replica or None,
                client_id=f"{group}-{replica}" if replica else f"{group}-{socket.gethostname()}-{os.getpid()}",
                session_timeout_ms=session_ms, heartbeat_interval_ms=max(100, session_ms // 4))


def consumer(servers: str, group: str, topics: list[str], **overrides: object) -> KafkaConsumer:
    """Offsets are committed by the runner, only after each effect is stored."""
    config: dict = dict(bootstrap_servers=servers, group_id=group, enable_auto_commit=False,
                        auto_offset_reset="earliest", max_poll_records=200, fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                        reconnect_backoff_max_ms=1000, metadata_max_age_ms=30000, bootstrap_timeout_ms=5000,
                        metrics_enabled=False,
                        **membership(group))
    config.update(overrides)
    c = KafkaConsumer(**config)
    # Join only once every topic's partitions are known: a member that joins before would get no
    # partitions and keep none until the next metadata refresh (minutes later).
    deadline = time.monotonic() + 60
    while any(c.partitions_for_topic(t) is None for t in topics) and time.monotonic() < deadline:
        time.sleep(0.2)
    c.subscribe(topics)
    return c
