"""The event backbone: one hop outbox -> relay -> Kafka -> consumer, next to a raw kafka-python hop.

Managed hop: an event is committed into an outbox (SQLiteStore), an OutboxRelay thread publishes it,
a ConsumerRunner-based consumer parses the envelope and applies it in one store transaction;
measured from the outbox commit to the consumer's commit. Raw hop: KafkaProducer.send (the
suite's producer settings) to a KafkaConsumer with manual assignment; measured from send() to
the record in hand. Samples of both alternate in one run. Throughput: one ConsumerRunner applying
N pre-published events with a trivial effect (one kv row), from the first applied to the last.
Events go to bench.* topics so the services' consumers never see them.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from functools import partial
from typing import Any

from kafka import KafkaConsumer

from bench.harness import BENCH_TOPICS, VAR
from bench.measure import summary_ms
from bench.watch import assign_at_end
from shared.events import kafka
from shared.events.consumer import ConsumerRunner, RunnerConfig
from shared.events.envelope import build_event, parse_event
from shared.events.relay import OutboxRelay
from shared.fhir.store import OutboxEvent, SQLiteStore

HOP, RAW, BULK = BENCH_TOPICS
EVENT_TYPE = "iop.careplan.created"
BASE = "http://127.0.0.1:28082/fhir"


def careplan_event(n: int) -> OutboxEvent:
    """A careplan.created event as careplan emits it: the plan, two goals and the episode (~1.7 KB)."""
    patient = f"bench-patient-{n % 64}"
    goals = [{"resourceType": "Goal", "id": f"g{n}-{i}", "lifecycleStatus": "active",
              "description": {"text": text}, "subject": {"reference": f"Patient/{patient}"}}
             for i, text in enumerate(("Attend at least 80% of sessions", "No substance use for 30 days"))]
    episode = {"resourceType": "EpisodeOfCare", "id": f"e{n}", "status": "active",
               "patient": {"reference": f"Patient/{patient}"}, "period": {"start": "2026-03-02"}}
    plan = {"resourceType": "CarePlan", "id": f"cp{n}", "meta": {"versionId": "1"}, "status": "active",
            "intent": "plan", "title": "IOP treatment plan (ASAM 2.1)", "subject": {"reference": f"Patient/{patient}"},
            "period": {"start": "2026-03-02", "end": "2026-05-25"},
            "goal": [{"reference": f"Goal/{g['id']}"} for g in goals],
            "activity": [{"detail": {"kind": "ServiceRequest", "status": "scheduled",
                                     "code": {"coding": [{"system": "http://snomed.info/sct", "code": code}],
                                              "text": text},
                                     "scheduledTiming": {"repeat": {"frequency": freq, "period": 1,
                                                                    "periodUnit": "wk", "duration": 3,
                                                                    "durationUnit": "h"}}}}
                         for code, text, freq in (("76168009", "Group therapy", 3), ("75516001", "Psychotherapy", 1))]}
    return build_event(EVENT_TYPE, BASE, patient, plan, [*goals, episode])


def to_topic(event: OutboxEvent, topic: str) -> OutboxEvent:
    return dataclasses.replace(event, topic=topic)


def ce_id(event: OutboxEvent) -> str:
    return dict(event.headers)["ce_id"]


class TimedRunner(ConsumerRunner):
    """A ConsumerRunner that notes when each record was received and when its effect was committed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marks: dict[str, tuple[float, float]] = {}
        self.changed = threading.Condition()

    def process_batch(self, records: list[Any]) -> None:
        received = time.perf_counter()
        super().process_batch(records)
        applied = time.perf_counter()
        keys = [next((v.decode() for k, v in record.headers or [] if k == "ce_id"), "") for record in records]
        with self.changed:
            self.marks.update((key, (received, applied)) for key in keys)
            self.changed.notify_all()

    def wait(self, key: str, timeout: float = 10.0) -> tuple[float, float]:
        with self.changed:
            if not self.changed.wait_for(lambda: key in self.marks, timeout):
                raise TimeoutError(f"event {key} not applied within {timeout} s")
            return self.marks[key]

    def wait_count(self, count: int, timeout: float) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.marks) >= count, timeout):
                raise TimeoutError(f"only {len(self.marks)} of {count} events applied within {timeout} s")


def trivial_effect(tx: Any, event: Any) -> None:
    tx.put_value(f"last:{event.key}", event.id)


def start_runner(servers: str, group: str, topic: str, db: str) -> tuple[TimedRunner, threading.Event]:
    config = RunnerConfig(group, {EVENT_TYPE: trivial_effect}, [topic], lag_every_s=3600)
    runner = TimedRunner(SQLiteStore(db), kafka.consumer(servers, group, [topic]), partial(kafka.producer, servers),
                         config)
    stop = threading.Event()
    threading.Thread(target=runner.run, args=(stop,), name=f"runner-{group}", daemon=True).start()
    return runner, stop


class RawHop:
    """kafka-python alone: producer.send() to a manually assigned consumer, one record at a time."""

    def __init__(self, servers: str, topic: str = RAW) -> None:
        self.topic, self.producer = topic, kafka.producer(servers)
        self.consumer = KafkaConsumer(bootstrap_servers=servers, group_id=None, enable_auto_commit=False,
                                      fetch_max_wait_ms=100)
        assign_at_end(self.consumer, (topic,))
        self.arrived: dict[str, float] = {}
        self.changed, self._stop = threading.Condition(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="raw-hop", daemon=True)
        self._thread.start()
        self.sample(careplan_event(0))  # connections up and metadata known before measuring

    def _run(self) -> None:
        while not self._stop.is_set():
            for records in self.consumer.poll(timeout_ms=100).values():
                now = time.perf_counter()
                with self.changed:
                    for r in records:
                        self.arrived[next(v.decode() for k, v in r.headers if k == "ce_id")] = now
                    self.changed.notify_all()

    def sample(self, event: OutboxEvent, timeout: float = 10.0) -> float:
        """Seconds from send() to the record in the consumer's hands."""
        key = ce_id(event)
        started = time.perf_counter()
        self.producer.send(self.topic, key=event.key.encode(), value=event.value.encode(),
                           headers=[(k, v.encode()) for k, v in event.headers])
        with self.changed:
            if not self.changed.wait_for(lambda: key in self.arrived, timeout):
                raise TimeoutError("raw hop: record not consumed within 10 s")
            return self.arrived.pop(key) - started

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.consumer.close()
        self.producer.close(5)


def run(servers: str, samples: int, bulk: int) -> dict[str, Any]:
    folder = VAR / "hop"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.db*"):
        old.unlink()
    latency = hop_latency(servers, samples, str(folder))
    return {**latency, "throughput": consumer_throughput(servers, bulk, str(folder / "bulk.db")),
            "parse_event_us": parse_cost_us(full=False), "parse_event_full_us": parse_cost_us(full=True)}


def hop_latency(servers: str, samples: int, folder: str) -> dict[str, Any]:
    outbox = SQLiteStore(f"{folder}/outbox.db")
    relay_stop = threading.Event()
    relay = OutboxRelay(outbox, partial(kafka.producer, servers), poll_ms=5)
    threading.Thread(target=relay.run, args=(relay_stop,), name="relay", daemon=True).start()
    runner, runner_stop = start_runner(servers, "bench-hop", HOP, f"{folder}/consumer.db")
    raw = RawHop(servers)
    managed, received, raw_s = [], [], []
    try:
        for n in range(-20, samples):  # the first 20 of each warm up connections and caches
            event = to_topic(careplan_event(n), HOP)
            with outbox.transaction() as tx:
                tx.add_event(event)
            committed = time.perf_counter()
            got, applied = runner.wait(ce_id(event), 30 if n == -20 else 10)  # the first waits for the group join
            raw_hop = raw.sample(careplan_event(n))
            if n >= 0:
                managed.append(applied - committed)
                received.append(got - committed)
                raw_s.append(raw_hop)
            time.sleep(0.005)
    finally:
        raw.close()
        runner_stop.set()
        relay_stop.set()
        time.sleep(0.3)
    return {"samples": samples, "event_bytes": len(careplan_event(0).value),
            "managed_ms": summary_ms(managed), "to_consumer_ms": summary_ms(received),
            "apply_ms": summary_ms(a - r for a, r in zip(managed, received, strict=True)), "raw_ms": summary_ms(raw_s)}


def consumer_throughput(servers: str, count: int, db: str) -> dict[str, Any]:
    """Events/s of one ConsumerRunner: N events already on the topic, timed from first to last applied."""
    producer = kafka.producer(servers)
    for n in range(count):
        event = careplan_event(n)
        producer.send(BULK, key=event.key.encode(), value=event.value.encode(),
                      headers=[(k, v.encode()) for k, v in event.headers])
    producer.flush(60)
    producer.close(5)
    runner, stop = start_runner(servers, "bench-bulk", BULK, db)
    try:
        runner.wait_count(count, timeout=180)
    finally:
        stop.set()
    applied = sorted(a for _, a in runner.marks.values())
    seconds = applied[-1] - applied[0]
    return {"events": count, "seconds": round(seconds, 2), "events_per_s": round((count - 1) / seconds, 1),
            "applied": runner.applied, "duplicates_skipped": runner.skipped, "dead_lettered": runner.dead_lettered}


def parse_cost_us(full: bool, repeat: int = 300) -> float:
    """What parse_event (CloudEvents headers, Bundle shape, FHIR check: structural or `full`) costs per record."""
    event = careplan_event(1)
    headers, key, value = [(k, v.encode()) for k, v in event.headers], event.key.encode(), event.value.encode()
    for _ in range(20):
        parse_event(headers, key, value, full=full)
    started = time.perf_counter()
    for _ in range(repeat):
        parse_event(headers, key, value, full=full)
    return round((time.perf_counter() - started) / repeat * 1e6, 1)
