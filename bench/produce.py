"""What a relay's round of rows costs the producer: kafka-python's default batch against the suite's.

    python -m bench.produce                  200 rounds of each, alternated in blocks of 50
    python -m bench.produce --rounds 400

A round is what the encounters relay publishes for one new plan: nine planned Encounters of one patient
(about 2 kB each, the suite's CloudEvents headers), committed to an outbox and then published by the relay's
own `publish_pending` (shared/events/relay.py): read, sent, settled and marked sent. With kafka-python's
16 kB batch the nine go in two produce requests, the second waiting for the first (one request in flight);
with the suite's (PRODUCER_BATCH_BYTES) in one. Starts the bench's own broker (the ports of `make bench`, so
not while it runs) and prints, per round for each, the CPU of this process (all threads) that the publishing
took, and the wall time with the outbox commit. Writes bench/results/produce.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.harness import BOOTSTRAP, VAR, Broker, stop_leftovers
from services.encounters.sessions import build_encounter
from shared.events import kafka
from shared.events.envelope import build_event
from shared.events.relay import OutboxRelay
from shared.fhir.store import OutboxEvent, SQLiteStore

RESULTS = Path(__file__).parent / "results" / "produce.json"
TOPIC = "bench.raw"
KAFKA_PYTHON_DEFAULT_BATCH = 16384


def planned_round(n: int) -> list[OutboxEvent]:
    patient = f"bench-produce-{n}"
    start = datetime(2026, 1, 5, 9, tzinfo=UTC)
    events = []
    for week_day in range(9):
        encounter = build_encounter("group", patient, start=start + timedelta(days=week_day),
                                    end=start + timedelta(days=week_day, hours=3), episode_id=f"ep-{n}",
                                    activity=(f"cp-{n}", week_day % 3), encounter_id=f"enc-{n}-{week_day}")
        event = build_event("iop.encounter.planned", "http://localhost:8083/fhir", patient, encounter)
        events.append(dataclasses.replace(event, topic=TOPIC))
    return events


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def publish(relay: OutboxRelay, events: list[OutboxEvent]) -> float:
    """Commit a round to the relay's outbox, then let the relay publish it; the CPU seconds of the publishing."""
    with relay.store.transaction() as tx:
        for event in events:
            tx.add_event(event)
    before = cpu_s()
    if relay.publish_pending() != len(events):
        raise SystemExit("the relay did not publish a whole round")
    return cpu_s() - before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.produce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="rounds of each batch size (default 200)")
    parser.add_argument("--block", type=int, default=50, help="rounds of one before the other (default 50)")
    args = parser.parse_args(argv)
    stop_leftovers()
    folder = VAR / "produce"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    broker = Broker()
    sizes = {"kafka-python's 16 kB": KAFKA_PYTHON_DEFAULT_BATCH, "the suite's": kafka.PRODUCER_BATCH_BYTES}
    spent = {name: [0.0, 0.0, 0] for name in sizes}  # CPU s, wall s, rounds
    try:
        broker.start()
        relays = {name: OutboxRelay(SQLiteStore(folder / f"outbox-{size}.db"),
                                    lambda size=size: kafka.producer(BOOTSTRAP, batch_size=size))
                  for name, size in sizes.items()}
        rounds = [planned_round(n) for n in range(args.block)]
        for relay in relays.values():  # connections, metadata and the idempotent session first
            for events in rounds[:5]:
                publish(relay, events)
        done = 0
        while done < args.rounds:
            for name, relay in relays.items():
                figures = spent[name]
                for events in rounds:
                    wall0 = time.perf_counter()
                    figures[0] += publish(relay, events)
                    figures[1] += time.perf_counter() - wall0
                figures[2] += len(rounds)
            done += len(rounds)
        for relay in relays.values():
            relay.producer.close(10)
    finally:
        broker.stop()
    record_bytes = sum(len(event.value) for event in rounds[0]) // len(rounds[0])
    print(f"a relay's round of 9 records of about {record_bytes} bytes, sent and settled, {args.rounds} rounds each:")
    result = {"records_per_round": 9, "record_bytes": record_bytes, "rounds": args.rounds, "batches": {}}
    for name, (cpu, wall, count) in spent.items():
        per_cpu, per_wall = 1000 * cpu / count, 1000 * wall / count
        print(f"  batch of {name:22s} {per_cpu:5.2f} ms of CPU per round (all threads), {per_wall:5.2f} ms wall")
        result["batches"][name] = {"batch_bytes": sizes[name], "cpu_ms_per_round": round(per_cpu, 3),
                                   "wall_ms_per_round": round(per_wall, 3)}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
