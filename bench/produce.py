"""What a relay's round of rows costs the producer: kafka-python's default batch against the suite's.

    python -m bench.produce                  200 rounds of each, alternated in blocks of 50
    python -m bench.produce --rounds 400

A round is what the encounters relay publishes for one new plan: nine planned Encounters of one patient
(about 2 kB each, the suite's CloudEvents headers), sent and then settled as the relay does
(shared/events/relay.py). With kafka-python's 16 kB batch the nine go in two produce requests, the second
waiting for the first (one request in flight); with the suite's (PRODUCER_BATCH_BYTES) in one. Starts the
bench's own broker (the ports of `make bench`, so not while it runs) and prints the CPU of this process, all
threads, per round for each, with the wall time. Writes bench/results/produce.json.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.harness import BOOTSTRAP, Broker, stop_leftovers
from services.encounters.sessions import build_encounter
from shared.events import kafka
from shared.events.envelope import build_event
from shared.events.relay import _published_headers

RESULTS = Path(__file__).parent / "results" / "produce.json"
TOPIC = "bench.raw"
KAFKA_PYTHON_DEFAULT_BATCH = 16384


def planned_round(n: int) -> list[tuple[bytes, bytes, list[tuple[str, str]]]]:
    patient = f"bench-produce-{n}"
    start = datetime(2026, 1, 5, 9, tzinfo=UTC)
    rows = []
    for week_day in range(9):
        encounter = build_encounter("group", patient, start=start + timedelta(days=week_day),
                                    end=start + timedelta(days=week_day, hours=3), episode_id=f"ep-{n}",
                                    activity=(f"cp-{n}", week_day % 3), encounter_id=f"enc-{n}-{week_day}")
        event = build_event("iop.encounter.planned", "http://localhost:8083/fhir", patient, encounter)
        rows.append((event.key.encode(), event.value.encode(), event.headers))
    return rows


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def publish(producer: kafka.RenewableProducer, rows) -> None:
    futures = [producer.get().send(TOPIC, key=key, value=value, headers=_published_headers(TOPIC, headers))
               for key, value, headers in rows]
    if producer.settle(futures) != len(futures):
        raise SystemExit("the broker did not acknowledge a round")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.produce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="rounds of each batch size (default 200)")
    parser.add_argument("--block", type=int, default=50, help="rounds of one before the other (default 50)")
    args = parser.parse_args(argv)
    stop_leftovers()
    broker = Broker()
    sizes = {"kafka-python's 16 kB": KAFKA_PYTHON_DEFAULT_BATCH, "the suite's": kafka.PRODUCER_BATCH_BYTES}
    spent = {name: [0.0, 0.0, 0] for name in sizes}  # CPU s, wall s, rounds
    try:
        broker.start()
        producers = {name: kafka.RenewableProducer(lambda size=size: kafka.producer(BOOTSTRAP, batch_size=size))
                     for name, size in sizes.items()}
        rounds = [planned_round(n) for n in range(args.block)]
        for producer in producers.values():  # connections, metadata and the idempotent session first
            for rows in rounds[:5]:
                publish(producer, rows)
        done = 0
        while done < args.rounds:
            for name, producer in producers.items():
                cpu0, wall0 = cpu_s(), time.perf_counter()
                for rows in rounds:
                    publish(producer, rows)
                figures = spent[name]
                figures[0] += cpu_s() - cpu0
                figures[1] += time.perf_counter() - wall0
                figures[2] += len(rounds)
            done += len(rounds)
        for producer in producers.values():
            producer.close(10)
    finally:
        broker.stop()
    record_bytes = sum(len(value) for _, value, _ in rounds[0]) // len(rounds[0])
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
