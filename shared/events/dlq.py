"""Reading a dead-letter topic, and replaying its records to the topic they came from."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition

from shared.events import kafka
from shared.events.catalogue import DLQ_SUFFIX


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> str | None:
        return next((v.decode("utf-8", "replace") for k, v in self.headers if k == name), None)

    @property
    def ce_id(self) -> str | None:
        return self.header("ce_id")

    @property
    def kind(self) -> str:
        """Why it is here (shared/events/failures.py); `unknown` for a record dead-lettered before kinds."""
        return self.header("dlq_kind") or "unknown"


def read_topic(servers: str, topic: str, timeout_ms: int = 2000) -> Iterator:
    """Every record now in `topic`, from the beginning, without joining a consumer group."""
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            return
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > consumer.position(tp)}
        while remaining:
            batches = consumer.poll(timeout_ms=timeout_ms)
            if not batches:
                break
            for tp, records in batches.items():
                yield from records
                if consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        consumer.close()


def dead_letters(servers: str, topic: str) -> list[DeadLetter]:
    dlq = topic if topic.endswith(DLQ_SUFFIX) else topic + DLQ_SUFFIX
    return [DeadLetter(r.partition, r.offset, r.key, r.value, list(r.headers or []))
            for r in read_topic(servers, dlq)]


def count_by_kind(servers: str, topic: str) -> dict[str, int]:
    return dict(Counter(d.kind for d in dead_letters(servers, topic)))


def replay(servers: str, topic: str, ce_id: str | None = None) -> int:
    """Send dead letters back to their original topic (all, or the one with `ce_id`).

    Consumers apply each `ce_id` once, so replaying a record twice still has one effect.
    """
    letters = [d for d in dead_letters(servers, topic) if ce_id is None or d.ce_id == ce_id]
    producer = kafka.producer(servers)
    try:
        for d in letters:
            original = d.header("dlq_original_topic") or topic.removesuffix(DLQ_SUFFIX)
            headers = [(k, v) for k, v in d.headers if not k.startswith("dlq_")]
            producer.send(original, key=d.key, value=d.value, headers=headers)
        producer.flush(30)
    finally:
        producer.close(10)
    return len(letters)
