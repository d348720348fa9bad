"""Watching the event topics from the outside, as an integration engineer's consumer would."""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from shared.events.catalogue import TOPICS
from tests.support.waiting import wait_until


@dataclass(frozen=True)
class Seen:
    topic: str
    key: str
    headers: dict[str, str]
    bundle: dict[str, Any]

    @property
    def type(self) -> str:
        return self.headers.get("ce_type", "")

    @property
    def focus(self) -> dict[str, Any]:
        return self.bundle["entry"][0]["resource"]

    def of_type(self, rtype: str) -> list[dict[str, Any]]:
        return [e["resource"] for e in self.bundle["entry"] if e["resource"]["resourceType"] == rtype]


class EventWatcher:
    """Reads every contract topic in a background thread, from the end at start-up."""

    def __init__(self, bootstrap: str, topics: tuple[str, ...] = TOPICS) -> None:
        self.seen: list[Seen] = []
        self._lock, self._stop = threading.Lock(), threading.Event()
        # Manual assignment, no consumer group: nothing to join, so the watcher is ready at once.
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        partitions = [TopicPartition(t, p) for t in topics for p in self._consumer.partitions_for_topic(t) or ()]
        self._consumer.assign(partitions)
        self._consumer.seek_to_end(*partitions)
        for tp in partitions:
            self._consumer.position(tp)  # resolve "end" now: events from here on are seen
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for records in self._consumer.poll(timeout_ms=500).values():
                for r in records:
                    seen = Seen(r.topic, (r.key or b"").decode(), {k: v.decode() for k, v in r.headers or []},
                                json.loads(r.value))
                    with self._lock:
                        self.seen.append(seen)

    def events(self, ce_type: str, key: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.type == ce_type and (key is None or s.key == key)]

    def wait_for(self, ce_type: str, key: str | None = None, count: int = 1, timeout: float = 30) -> list[Seen]:
        return wait_until(lambda: len(self.events(ce_type, key)) >= count and self.events(ce_type, key), timeout,
                          what=f"{count} x {ce_type} for {key}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


def start_at_end(bootstrap: str, group: str, topics: list[str]) -> None:
    """Commit the end of `topics` for a new consumer group: it reads what comes next, not earlier tests' records."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        consumer.commit({tp: OffsetAndMetadata(end, "", -1) for tp, end in consumer.end_offsets(partitions).items()})
    finally:
        consumer.close()
