"""The suite's benchmarks on this machine: all four services and the broker together.

    python -m bench.run                  everything, about 5 minutes
    python -m bench.run --quick          shorter runs of everything, about 2 minutes
    python -m bench.run --only p1,p3     some sections (hop, p1, p2, p3, p4, rest, breadth)
    python -m bench.run --web intake=2x4 --web careplan=1x4     gunicorn workers x threads per service

Sections, in this order: rest (bench/fhir_rest.py, one careplan process, when present), breadth
(bench/fhir_breadth.py: a Bulk Data export of 10,000 resources, include-heavy searches), hop (event
backbone), p3 (EHR fan-out), p2 (throughput) with p4 (memory and CPU under p2's load), p1 (propagation
at 50/s, last because it may leave a backlog). Starts its own
broker (127.0.0.1:29092) and services (28081..28084) under var/bench, stops them at the end, prints a
table with PASS/MISS per target (it never fails on a miss) and writes bench/results/<section>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import fanout, hop, pipeline, report
from bench.harness import BOOTSTRAP, PORTS, VAR, Broker, Suite, settle, stop_leftovers

RESULTS = Path(__file__).parent / "results"
SECTIONS = ("rest", "breadth", "hop", "p1", "p3", "p2", "p4")


@dataclass(frozen=True)
class Plan:
    hop_samples: int = 300
    bulk_events: int = 5000
    p1_rate: int = 50
    p1_seconds: float = 20
    p3_revisions: int = 100
    p2_rates: tuple[int, ...] = (10, 20, 30, 40, 50, 75, 100, 150, 200, 300)
    p2_seconds: float = 15
    p2_drain_s: float = 10


QUICK = Plan(hop_samples=100, bulk_events=2000, p1_seconds=8, p3_revisions=30, p2_seconds=6, p2_drain_s=8)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help=f"comma-separated sections of {','.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="shorter durations and fewer samples")
    parser.add_argument("--web", action="append", default=[], metavar="SERVICE=WxT",
                        help="gunicorn workers x threads for one service (default 2x4 each)")
    args = parser.parse_args(argv)
    only = set((args.only or ",".join(SECTIONS)).split(","))
    if unknown := only - set(SECTIONS):
        parser.error(f"unknown sections {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    if "p4" in only:
        only.add("p2")  # memory is measured under p2's load
    args.sections = only
    args.web_config = {service: (2, 4) for service in PORTS}
    for item in args.web:
        service, _, shape = item.partition("=")
        if service not in PORTS or "x" not in shape:
            parser.error(f"--web {item}: expected SERVICE=WORKERSxTHREADS with SERVICE in {','.join(PORTS)}")
        workers, threads = shape.split("x")
        args.web_config[service] = (int(workers), int(threads))
    return args


def run_module(module: str, result: str) -> dict[str, Any]:
    """A benchmark of one process (bench/<module>.py), as its own process, before anything else is running."""
    done = subprocess.run([sys.executable, "-m", f"bench.{module}"], capture_output=True, text=True, timeout=300)
    print("\n".join("    " + line for line in done.stdout.rstrip().splitlines()), flush=True)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"python -m bench.{module} exited {done.returncode}: {last[0][:300]}"}
    return json.loads((RESULTS / result).read_text())


def run_rest() -> dict[str, Any]:
    return run_module("fhir_rest", "fhir_rest.json")


def run_sections(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if "rest" in args.sections and (Path(__file__).parent / "fhir_rest.py").exists():
        guarded(results, "rest", "one careplan process (bench/fhir_rest.py)", run_rest)
    if "breadth" in args.sections:
        guarded(results, "breadth", "export of 10,000 resources, include-heavy search (bench/fhir_breadth.py)",
                lambda: run_module("fhir_breadth", "fhir_breadth.json"))
    if not args.sections & {"hop", "p1", "p2", "p3"}:
        return results
    broker, suite = Broker(), Suite(args.web_config)
    try:
        step(f"broker on {BOOTSTRAP} (var/bench/kafka)")
        broker.start()
        if "hop" in args.sections:
            guarded(results, "hop", f"{plan.hop_samples} managed and raw hops, then {plan.bulk_events} events "
                    "through one consumer", lambda: hop.run(BOOTSTRAP, plan.hop_samples, plan.bulk_events))
        wanted = [s for s in ("p3", "p2", "p1") if s in args.sections]
        if wanted:
            step("suite: " + ", ".join(f"{s} :{p} ({w}x{t})" for s, p in PORTS.items()
                                       for w, t in [args.web_config[s]]))
            try:
                suite.start()
            except Exception as exc:  # noqa: BLE001 - report it in the table, stop what did start
                for section in wanted:
                    results[section] = {"error": f"the suite did not start: {exc}"}
                wanted = []
        if "p3" in wanted:
            guarded(results, "p3", f"{plan.p3_revisions} CarePlan revisions to a subscribed EHR",
                    lambda: fanout.run(plan.p3_revisions))
        if "p2" in wanted:
            guarded(results, "p2", f"offered rates {list(plan.p2_rates)}/s, {plan.p2_seconds:.0f} s each, up to the "
                    "first failing one; p4: memory and CPU meanwhile",
                    lambda: pipeline.p2(list(plan.p2_rates), plan.p2_seconds, plan.p2_drain_s, suite, broker))
            if "footprint" in results["p2"]:
                results["p4"] = results["p2"].pop("footprint")
            if "p1" in wanted:
                step(f"settled after {settle(60):.0f} s (the services' consumer groups caught up, or 60 s passed)")
        if "p1" in wanted:
            guarded(results, "p1", f"{plan.p1_rate} intakes/s for {plan.p1_seconds:.0f} s",
                    lambda: pipeline.p1(plan.p1_rate, plan.p1_seconds))
    finally:
        step("stopping the suite and the broker")
        suite.stop()
        broker.stop()
    return results


def guarded(results: dict[str, Any], section: str, what: str, measure: Callable[[], Any]) -> None:
    """Run one section; a failure is reported in its place and the other sections still run."""
    step(f"{section}: {what}")
    try:
        results[section] = measure()
    except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not crash
        traceback.print_exc()
        results[section] = {"error": f"{type(exc).__name__}: {exc}"}


def step(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def meta(args: argparse.Namespace, plan: Plan, seconds: float) -> dict[str, Any]:
    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": args.quick,
            "web": {s: f"{w}x{t}" for s, (w, t) in args.web_config.items()}, "plan": plan.__dict__,
            "seconds": round(seconds, 1)}


def save(results: dict[str, Any], info: dict[str, Any], verdicts: list[dict[str, Any]]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    names = {"hop": "event_hop", "p1": "p1_propagation", "p2": "p2_throughput", "p3": "p3_ehr_fanout",
             "p4": "p4_footprint"}
    for section, name in names.items():
        if section in results:
            body = {"benchmark": name, **info, "targets": [v for v in verdicts if v["section"] == section],
                    "results": results[section]}
            (RESULTS / f"{name}.json").write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")


def interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else Plan()
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started in the background, where SIGINT is ignored
        signal.signal(sig, interrupt)
    started = time.perf_counter()
    stop_leftovers()
    try:
        results = run_sections(args, plan)
    except KeyboardInterrupt:
        print("interrupted: the bench's broker and services are stopped", file=sys.stderr)
        return 130
    info = meta(args, plan, time.perf_counter() - started)
    verdicts = report.verdicts(results)
    print(report.table(results, info, verdicts))
    save(results, info, verdicts)
    print(f"\nresults in {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}/, "
          f"logs in {VAR}/log; {info['seconds']:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
