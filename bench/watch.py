"""Watching event topics from outside, as an integration engineer's consumer would.

Manual partition assignment, no consumer group: nothing to join, so the watcher reads from the
end of each partition as soon as it is built. Each record's arrival is timed with
time.perf_counter() in the watching thread; values are parsed only when asked for.
"""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition


@dataclass(frozen=True)
class Seen:
    topic: str
    partition: int
    offset: int
    key: str
    headers: dict[str, str]
    arrived: float  # time.perf_counter() when the watcher got it
    bundle: dict[str, Any] | None

    @property
    def type(self) -> str:
        return self.headers.get("ce_type", "")

    @property
    def focus(self) -> dict[str, Any]:
        return (self.bundle or {"entry": [{"resource": {}}]})["entry"][0]["resource"]

    def of_type(self, rtype: str) -> list[dict[str, Any]]:
        return [e["resource"] for e in (self.bundle or {}).get("entry", [])
                if e.get("resource", {}).get("resourceType") == rtype]


def assign_at_end(consumer: KafkaConsumer, topics: tuple[str, ...], timeout: float = 15.0) -> None:
    """Assign every partition of `topics` (waiting for fresh topics' metadata) and start at their ends."""
    deadline = time.monotonic() + timeout
    while True:
        known = {t: consumer.partitions_for_topic(t) for t in topics}
        if all(known.values()):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"topics without partitions after {timeout:.0f} s: "
                               f"{[t for t, p in known.items() if not p]}")
        time.sleep(0.2)
    partitions = [TopicPartition(t, p) for t, ps in known.items() for p in sorted(ps)]
    consumer.assign(partitions)
    consumer.seek_to_end(*partitions)
    for tp in partitions:
        consumer.position(tp)  # resolve "end" now: whatever is published from here on is seen


class TopicWatcher:
    """Keeps the records of `types` (all types when None); first arrival and count per (type, key)."""

    def __init__(self, bootstrap: str, topics: tuple[str, ...], types: set[str] | None = None,
                 keep_records: bool = False, parse_values: bool = False) -> None:
        self.types, self.keep_records, self.parse_values = types, keep_records, parse_values
        self.records: list[Seen] = []
        self.first: dict[tuple[str, str], float] = {}
        self.counts: Counter[tuple[str, str]] = Counter()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                       fetch_max_wait_ms=100, max_poll_records=2000)
        assign_at_end(self._consumer, topics)
        self._thread = threading.Thread(target=self._run, name="topic-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            batches = self._consumer.poll(timeout_ms=100)
            arrived = time.perf_counter()
            if not batches:
                continue
            with self._changed:
                for records in batches.values():
                    for r in records:
                        self._record(r, arrived)
                self._changed.notify_all()

    def _record(self, r: Any, arrived: float) -> None:
        headers = {k: v.decode("utf-8", "replace") for k, v in r.headers or []}
        ce_type, key = headers.get("ce_type", ""), (r.key or b"").decode("utf-8", "replace")
        if self.types is not None and ce_type not in self.types:
            return
        self.first.setdefault((ce_type, key), arrived)
        self.counts[(ce_type, key)] += 1
        if self.keep_records:
            bundle = json.loads(r.value) if self.parse_values else None
            self.records.append(Seen(r.topic, r.partition, r.offset, key, headers, arrived, bundle))

    def count(self, ce_type: str, key: str) -> int:
        with self._changed:
            return self.counts[(ce_type, key)]

    def seen(self, ce_type: str | None = None, key: str | None = None) -> list[Seen]:
        with self._changed:
            return [s for s in self.records if (ce_type is None or s.type == ce_type) and (key is None or s.key == key)]

    def wait_for(self, ce_type: str, key: str, count: int = 1, timeout: float = 30.0) -> list[Seen]:
        """The records of one type for one key once `count` have arrived; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.counts[(ce_type, key)] < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{ce_type} for {key} not seen within {timeout:.0f} s "
                                       f"({self.counts[(ce_type, key)]} of {count})")
                self._changed.wait(min(left, 0.5))
        return self.seen(ce_type, key)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()

    def __enter__(self) -> TopicWatcher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
