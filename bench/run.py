"""The suite's benchmarks on this machine: all four services and the broker together.

    python -m bench.run                  everything on both store profiles, about 12 minutes
    python -m bench.run --quick          shorter runs of everything, about 5 minutes
    python -m bench.run --only p1,p3     some sections (hop, p1, p2, p3, p4, rest, breadth, search)
    python -m bench.run --profile sqlite       one store profile (sqlite, postgresql or both, the default)
    python -m bench.run --seconds 5      each P1 run and P2 step this long (a short check of the harness)
    python -m bench.run --web intake=2x4 --web careplan=1x4     gunicorn workers x threads per service

Sections, in this order: rest (bench/fhir_rest.py, one careplan process, when present), breadth
(bench/fhir_breadth.py: a Bulk Data export of 10,000 resources, include-heavy searches), search
(bench/search_scale.py: searches over 100,000 CarePlans, their Goals and Encounters, on each store), hop (event
backbone), then for each store profile p3 (EHR fan-out), p2 (throughput) with p4 (memory and CPU under
p2's load), p1 (propagation at 50/s, last because it may leave a backlog). Each profile gets a fresh
broker (127.0.0.1:29092) and services (28081..28084) under var/bench, with SQLite files or a throwaway
PostgreSQL server (127.0.0.1:25432, one database per service), stopped at the end. Prints a table with
PASS/MISS per target (it never fails on a miss), the profiles' P2 and P1 figures side by side with their
ratio, and writes bench/results/<section>.json (<section>_postgresql.json for PostgreSQL, profiles.json
for the comparison).
"""
from __future__ import annotations

import argparse
import dataclasses
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
from bench.harness import BOOTSTRAP, PG_PORT, PORTS, PROFILES, VAR, Broker, PgServer, Suite, settle, stop_leftovers

RESULTS = Path(__file__).parent / "results"
SECTIONS = ("rest", "breadth", "search", "hop", "p1", "p3", "p2", "p4")
PER_PROFILE = ("p1", "p2", "p3", "p4")  # the sections the suite runs, once on each store profile


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
    parser.add_argument("--profile", default="both", choices=(*PROFILES, "both"),
                        help="the services' store: SQLite files, a local PostgreSQL server, or both in turn")
    parser.add_argument("--seconds", type=float, metavar="S", help="length of the P1 run and of each P2 step")
    parser.add_argument("--web", action="append", default=[], metavar="SERVICE=WxT",
                        help="gunicorn workers x threads for one service (default 2x4 each)")
    args = parser.parse_args(argv)
    only = set((args.only or ",".join(SECTIONS)).split(","))
    if unknown := only - set(SECTIONS):
        parser.error(f"unknown sections {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    if "p4" in only:
        only.add("p2")  # memory is measured under p2's load
    args.sections = only
    args.profiles = PROFILES if args.profile == "both" else (args.profile,)
    args.web_config = {service: (2, 4) for service in PORTS}
    for item in args.web:
        service, _, shape = item.partition("=")
        if service not in PORTS or "x" not in shape:
            parser.error(f"--web {item}: expected SERVICE=WORKERSxTHREADS with SERVICE in {','.join(PORTS)}")
        workers, threads = shape.split("x")
        args.web_config[service] = (int(workers), int(threads))
    return args


def run_module(module: str, result: str, *argv: str, timeout: float = 300) -> dict[str, Any]:
    """A benchmark of one process (bench/<module>.py), as its own process, before anything else is running."""
    done = subprocess.run([sys.executable, "-m", f"bench.{module}", *argv], capture_output=True, text=True,
                          timeout=timeout)
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
    if "search" in args.sections:
        plans = ["--plans", "20000", "--samples", "200"] if args.quick else []
        guarded(results, "search", "searches over 100,000 CarePlans on each store (bench/search_scale.py)",
                lambda: run_module("search_scale", "search_scale.json", "--profile", args.profile, *plans,
                                   timeout=1800))
    if not args.sections & {"hop", "p1", "p2", "p3"}:
        return results
    wanted = [s for s in ("p3", "p2", "p1") if s in args.sections]
    profiles = args.profiles if wanted else args.profiles[:1]
    results["profiles"] = {}
    for n, profile in enumerate(profiles):
        results["profiles"][profile] = run_profile(args, plan, profile, wanted, hop=n == 0 and "hop" in args.sections,
                                                   into=results)
    return results


def run_profile(args: argparse.Namespace, plan: Plan, profile: str, wanted: list[str], hop: bool,
                into: dict[str, Any]) -> dict[str, Any]:
    """The suite's sections on one store profile, with a fresh broker (and PostgreSQL server) of their own."""
    results: dict[str, Any] = {}
    broker, suite, pg = Broker(), Suite(args.web_config, profile), PgServer()
    try:
        step(f"[{profile}] broker on {BOOTSTRAP} (var/bench/kafka); load average {os.getloadavg()[0]:.1f}")
        broker.start()
        if hop:
            guarded(into, "hop", f"{plan.hop_samples} managed and raw hops, then {plan.bulk_events} events "
                    "through one consumer", lambda: hop_run(plan))
        if wanted and profile == "postgresql":
            step(f"[{profile}] PostgreSQL on 127.0.0.1:{PG_PORT}, one database per service (var/bench/postgres)")
            try:
                pg.start()
            except Exception as exc:  # noqa: BLE001 - report it in the table
                step(f"[{profile}] PostgreSQL did not start: {exc}")
                return {section: {"error": f"PostgreSQL did not start: {exc}"} for section in wanted}
        if wanted:
            step(f"[{profile}] suite: " + ", ".join(f"{s} :{p} ({w}x{t})" for s, p in PORTS.items()
                                                    for w, t in [args.web_config[s]]))
            try:
                suite.start()
            except Exception as exc:  # noqa: BLE001 - report it in the table, stop what did start
                step(f"[{profile}] the suite did not start: {type(exc).__name__}: {exc}")
                return {section: {"error": f"the suite did not start: {exc}"} for section in wanted}
        if "p3" in wanted:
            guarded(results, "p3", f"[{profile}] {plan.p3_revisions} CarePlan revisions to a subscribed EHR",
                    lambda: fanout.run(plan.p3_revisions))
        if "p2" in wanted:
            guarded(results, "p2", f"[{profile}] offered rates {list(plan.p2_rates)}/s, {plan.p2_seconds:.0f} s "
                    "each, up to the first failing one; p4: memory and CPU meanwhile",
                    lambda: pipeline.p2(list(plan.p2_rates), plan.p2_seconds, plan.p2_drain_s, suite, broker,
                                        {"postgresql (server)": pg.pid or 0} if profile == "postgresql" else None))
            if "footprint" in results["p2"]:
                results["p4"] = results["p2"].pop("footprint")
            if "p1" in wanted:
                step(f"settled after {settle(60):.0f} s (the services' consumer groups caught up, or 60 s passed)")
        if "p1" in wanted:
            guarded(results, "p1", f"[{profile}] {plan.p1_rate} intakes/s for {plan.p1_seconds:.0f} s",
                    lambda: pipeline.p1(plan.p1_rate, plan.p1_seconds))
    finally:
        step(f"[{profile}] stopping the suite and the broker" + (" and PostgreSQL" if profile == "postgresql" else ""))
        suite.stop()
        broker.stop()
        pg.stop()
    return results


def hop_run(plan: Plan) -> dict[str, Any]:
    return hop.run(BOOTSTRAP, plan.hop_samples, plan.bulk_events)


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
            "profiles": list(args.profiles),
            "seconds": round(seconds, 1)}


NAMES = {"hop": "event_hop", "p1": "p1_propagation", "p2": "p2_throughput", "p3": "p3_ehr_fanout",
         "p4": "p4_footprint"}


def save(results: dict[str, Any], info: dict[str, Any], verdicts: list[dict[str, Any]]) -> None:
    """A file per section and profile (SQLite's under the section's name, PostgreSQL's with _postgresql)."""
    RESULTS.mkdir(parents=True, exist_ok=True)

    def write(name: str, body: dict[str, Any]) -> None:
        (RESULTS / f"{name}.json").write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")

    if "hop" in results:
        write(NAMES["hop"], {"benchmark": NAMES["hop"], **info, "targets": [], "results": results["hop"]})
    for profile, sections in results.get("profiles", {}).items():
        for section, section_results in sections.items():
            name = NAMES[section] + ("" if profile == "sqlite" else f"_{profile}")
            write(name, {"benchmark": NAMES[section], "profile": profile, **info,
                         "targets": [v for v in verdicts if v["section"] == section and v["profile"] == profile],
                         "results": section_results})
    if len(results.get("profiles", {})) > 1:
        write("profiles", {"benchmark": "store_profiles", **info, "results": report.comparison(results["profiles"])})


def interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else Plan()
    if args.seconds:
        plan = dataclasses.replace(plan, p1_seconds=args.seconds, p2_seconds=args.seconds,
                                   p2_drain_s=max(plan.p2_drain_s, args.seconds))
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
    verdicts = [{**v, "profile": profile} for profile, sections in results.get("profiles", {}).items()
                for v in report.verdicts(sections)] + report.search_verdicts(results.get("search"))
    print(report.table(results, info, verdicts))
    save(results, info, verdicts)
    print(f"\nresults in {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}/, "
          f"logs in {VAR}/log; {info['seconds']:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
