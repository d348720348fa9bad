"""CPU per intake of each service's own work, in one process: the pipeline's stages without Kafka.

    python -m bench.stages                 200 intakes (after 50 to warm up)
    python -m bench.stages --intakes 500
    python -m bench.stages --cprofile intake-web --sort cumulative

Intake's web app takes the partner submissions through Flask's test client; then each consuming
service's handlers apply, one event per store transaction as a worker does at a steady rate, the
events the services before it committed to their outboxes (careplan: intake's; encounters:
careplan's; aftercare: all of them). Stores are fresh SQLite files under var/bench/stages with
durable commits. What the live suite spends besides (the relay's publishing, the Kafka clients, the
broker) is `make profile`'s. Being in one process, the figures are steady enough to compare two
commits of the code: a change to a handler or the store shows here first. Prints user and system
CPU per intake for each stage, with the store's own statements apart, and writes
bench/results/stages.json.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "stages.json"
VAR = Path(__file__).resolve().parent.parent / "var" / "bench" / "stages"
SECRET = "bench-stages-" + "s" * 32
STAGES = ("intake-web", "careplan", "encounters", "aftercare")


def cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


class Stage:
    """CPU spent inside `measure` blocks, per intake."""

    def __init__(self, name: str, profiler: cProfile.Profile | None = None) -> None:
        self.name, self.user, self.system, self.wall = name, 0.0, 0.0, 0.0
        self.profiler = profiler

    def measure(self, work: Callable[[], Any]) -> Any:
        (u0, s0), w0 = cpu(), time.perf_counter()
        if self.profiler:
            self.profiler.enable()
        try:
            return work()
        finally:
            if self.profiler:
                self.profiler.disable()
            (u1, s1), w1 = cpu(), time.perf_counter()
            self.user, self.system, self.wall = self.user + u1 - u0, self.system + s1 - s0, self.wall + w1 - w0

    def figures(self, intakes: int) -> dict[str, float]:
        per = 1000 / max(intakes, 1)
        return {"user_ms": round(self.user * per, 2), "system_ms": round(self.system * per, 2),
                "cpu_ms": round((self.user + self.system) * per, 2)}


def outbox_records(store) -> list[tuple[list[tuple[str, bytes]], bytes, bytes]]:
    """What a consumer would fetch: the outbox rows as Kafka records (headers, key, value), marked sent."""
    records = []
    while rows := store.unsent_events(500):
        records += [([(k, v.encode()) for k, v in row.headers], row.key.encode(), row.value.encode()) for row in rows]
        store.mark_sent([row.seq for row in rows])
    return records


def consume(spec, records: list, stage: Stage) -> int:
    """Apply the records a service's worker acts on, each in its own transaction; how many it applied."""
    from shared.events.consumer import ConsumerRunner, RunnerConfig

    class Subscriber:  # ConsumerRunner only subscribes here: records are handed to it, not polled
        def subscribe(self, topics, listener=None) -> None:
            pass

    runner = ConsumerRunner(spec.store, Subscriber(), lambda: None, RunnerConfig(spec.group, spec.handlers,
                                                                                   spec.topics))

    def run() -> None:
        for headers, key, value in records:
            record = type("Record", (), {"headers": headers, "key": key, "value": value, "topic": "",
                                         "partition": 0, "offset": 0})
            runner.process_batch([record])

    stage.measure(run)
    if runner.dead_lettered or runner.handler_errors:
        raise SystemExit(f"{spec.group}: {runner.dead_lettered} dead letters, {runner.handler_errors} handler errors")
    return runner.applied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--intakes", type=int, default=200)
    parser.add_argument("--warm", type=int, default=50, help="intakes through every stage first, not measured")
    parser.add_argument("--cprofile", metavar="STAGE", choices=STAGES,
                        help="also list the functions one stage spends most in "
                        "(cProfile: its own overhead inflates the figures of that stage)")
    parser.add_argument("--sort", default="tottime", help="the order of that list (a pstats key, e.g. cumulative)")
    parser.add_argument("--callees", metavar="REGEX", help="and what the functions matching REGEX call")
    args = parser.parse_args(argv)
    shutil.rmtree(VAR, ignore_errors=True)
    VAR.mkdir(parents=True)
    os.environ.update({"IOP_VAR_DIR": str(VAR), "IOP_AUTH_HS256_SECRET": SECRET, "IOP_LOG_LEVEL": "WARNING"})
    for name in ("INTAKE", "CAREPLAN", "ENCOUNTERS", "AFTERCARE"):
        os.environ.pop(f"IOP_{name}_DB", None)

    from bench.load import bodies
    from services.aftercare.worker_spec import worker_spec as aftercare_spec
    from services.careplan.handlers import worker_spec as careplan_spec
    from services.encounters.handlers import worker_spec as encounters_spec
    from services.intake.app import create_app
    from shared.auth import mint
    from shared.config import Settings

    app = create_app()
    client = app.test_client()
    partner = {"Authorization": "Bearer " + mint(SECRET, "system/Patient.cr system/ServiceRequest.cr "
                                                 "system/QuestionnaireResponse.cr", subject="iop-bench",
                                                 partner="bench-referrals", ttl_s=3600),
               "Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    intake_store = app.extensions["iop"].store
    specs = {"careplan": careplan_spec(Settings("careplan")), "encounters": encounters_spec(Settings("encounters")),
             "aftercare": aftercare_spec(Settings("aftercare"))}
    profiler = cProfile.Profile() if args.cprofile else None
    stages = {name: Stage(name, profiler if name == args.cprofile else None) for name in STAGES}
    applied: dict[str, int] = {name: 0 for name in specs}

    def submit(payloads: list[bytes], stage: Stage) -> None:
        def run() -> None:
            for body in payloads:
                answer = client.post("/fhir", data=body, headers=partner)
                if answer.status_code >= 300:
                    raise SystemExit(f"intake answered {answer.status_code}: {answer.get_data(as_text=True)[:300]}")
        stage.measure(run)

    def journey(count: int, measured: dict[str, Stage]) -> None:
        submit(bodies(count), measured["intake-web"])
        intake_events = outbox_records(intake_store)
        applied["careplan"] += consume(specs["careplan"], intake_events, measured["careplan"])
        careplan_events = outbox_records(specs["careplan"].store)
        applied["encounters"] += consume(specs["encounters"], careplan_events, measured["encounters"])
        encounter_events = outbox_records(specs["encounters"].store)
        applied["careplan"] += consume(specs["careplan"], encounter_events, measured["careplan"])
        applied["aftercare"] += consume(specs["aftercare"], intake_events + careplan_events + encounter_events,
                                        measured["aftercare"])
        outbox_records(specs["aftercare"].store)

    journey(args.warm, {name: Stage(name) for name in stages})
    journey(args.intakes, stages)
    figures = {name: stage.figures(args.intakes) for name, stage in stages.items()}
    total = round(sum(f["cpu_ms"] for f in figures.values()), 2)
    print(f"{args.intakes} intakes, CPU per intake of each service's own work in one process (var/bench/stages):")
    print(f"  {'':14s} {'cpu':>8s} {'user':>7s} {'system':>7s}")
    for name, f in figures.items():
        print(f"  {name:14s} {f['cpu_ms']:5.2f} ms {f['user_ms']:7.2f} {f['system_ms']:7.2f}")
    print(f"  {'in all':14s} {total:5.2f} ms")
    if profiler is not None:
        stats = pstats.Stats(profiler).sort_stats(args.sort)
        stats.print_stats(30)
        if args.callees:
            stats.print_callees(args.callees)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"intakes": args.intakes, "stages": figures, "cpu_ms_per_intake": total,
                                   "applied": applied, "python": sys.version.split()[0]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
