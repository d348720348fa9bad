"""Kafka clients configured the way the contract needs them."""
from __future__ import annotations

import time

from kafka import KafkaConsumer, KafkaProducer


def producer(servers: str, **overrides: object) -> KafkaProducer:
    """Idempotent, acks=all: a retried send never writes a record twice to the log."""
    config: dict = dict(bootstrap_servers=servers, acks="all", enable_idempotence=True, linger_ms=1,
                        max_in_flight_requests_per_connection=5, retries=2**31 - 1,
                        request_timeout_ms=10000, delivery_timeout_ms=30000, reconnect_backoff_max_ms=1000)
    config.update(overrides)
    return KafkaProducer(**config)


def consumer(servers: str, group: str, topics: list[str], **overrides: object) -> KafkaConsumer:
    """Offsets are committed by the runner, only after each effect is stored."""
    config: dict = dict(bootstrap_servers=servers, group_id=group, enable_auto_commit=False,
                        auto_offset_reset="earliest", max_poll_records=200, fetch_max_wait_ms=500,
                        session_timeout_ms=10000, heartbeat_interval_ms=1000, reconnect_backoff_max_ms=1000,
                        client_id=f"{group}-consumer", metadata_max_age_ms=30000)
    config.update(overrides)
    c = KafkaConsumer(**config)
    # Join only once every topic's partitions are known: a member that joins before would get no
    # partitions and keep none until the next metadata refresh (minutes later).
    deadline = time.monotonic() + 60
    while any(c.partitions_for_topic(t) is None for t in topics) and time.monotonic() < deadline:
        time.sleep(0.2)
    c.subscribe(topics)
    return c
