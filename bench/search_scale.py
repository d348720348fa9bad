"""Search at scale: 100,000 CarePlans with their Goals, and as many Encounters, on both stores.

    python -m bench.search_scale [--plans 100000] [--profile sqlite|postgresql|both] [--samples 400]

Loads the careplan store (N CarePlans, two Goals each) and the encounters store (N Encounters) of 20,000
patients through the stores' own write path (resource, history and search index rows as the services write
them; the examples are valid resources, so the validator is left out of the load), then times each search of
the efficiency targets in process, through the service's search interaction (query parsing, SQL, bundle):

- `CarePlan?patient=X`, `Goal?patient=X&lifecycle-status=active`, `Encounter?patient=X&date=ge2026-01-01`,
  for random patients;
- `_lastUpdated` paging: `CarePlan?_lastUpdated=ge…&_sort=_lastUpdated&_count=50`, following `next` links
  page after page (each page timed), and for contrast the same page by `_offset` deep into the result;
- the raw baseline of the same run: a read of one resource by id.

PostgreSQL gets the same rows (copied from the SQLite load with COPY) on a throwaway server
(bench/harness.PgServer) and an ANALYZE, as autovacuum would give it. Prints p50 and p99 per search with PASS or
MISS against p50 <= 5 ms and p99 <= 20 ms, and writes bench/results/search_scale.json. About 3 minutes for
100,000 plans.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib import import_module
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import psycopg

from bench.harness import PgServer, store_env
from shared.config import Settings
from shared.fhir.interactions import FhirApi
from shared.fhir.registry import TAG_PARAM, Registry
from shared.fhir.search import index_rows
from shared.fhir.store import Store, open_store
from tests.support.examples import minimal

RESULTS = Path(__file__).parent / "results" / "search_scale.json"
PATIENTS = 20_000
P50_MS, P99_MS = 5.0, 20.0
TABLES = ("resource", "history", "search_index")


def registry(service: str) -> Registry:
    return import_module(f"services.{service}.resources").build_registry(Settings(service, database=":memory:"))


def load(store: Store, reg: Registry, make: Callable[[int], list[dict[str, Any]]], n: int) -> float:
    """`make(k)` for k in range(n), written in transactions of 2,000 resources; the seconds it took."""
    started = time.perf_counter()
    batch: list[dict[str, Any]] = []
    for k in range(n):
        batch += make(k)
        if len(batch) >= 2000 or k == n - 1:
            with store.transaction() as tx:
                for resource in batch:
                    rdef = reg.get(resource["resourceType"])
                    tx.write(rdef.type, resource["id"], resource, index_rows(resource, [*rdef.params, TAG_PARAM]))
            batch = []
    return time.perf_counter() - started


def plan_with_goals(k: int) -> list[dict[str, Any]]:
    patient = f"p{k % PATIENTS}"
    goals = [{**minimal("Goal", patient), "id": f"g{k}-{n}", "lifecycleStatus": ("active", "completed")[n]}
             for n in range(2)]
    plan = {**minimal("CarePlan", patient), "id": f"cp{k}", "status": ("active", "completed")[k % 2],
            "goal": [{"reference": f"Goal/{g['id']}"} for g in goals]}
    return [plan, *goals]


def encounter(k: int) -> list[dict[str, Any]]:
    patient = f"p{k % PATIENTS}"
    day = (k // PATIENTS) * 150 + k % 7  # a patient's encounters spread over last year and this one
    start = (datetime(2025, 1, 1, 10, tzinfo=UTC) + timedelta(days=day)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [{**minimal("Encounter", patient), "id": f"enc{k}", "status": "finished",
             "period": {"start": start, "end": start.replace("T10", "T11")}}]


def copy_to_postgresql(sqlite_path: Path, url: str) -> None:
    """The SQLite store's rows into the PostgreSQL store's tables (migrated by opening it), then ANALYZE."""
    store = open_store(url)
    store.ping()  # its first connection migrates the schema
    store.close()
    src = sqlite3.connect(sqlite_path)
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        for table in TABLES:
            columns = [row[1] for row in src.execute(f"PRAGMA table_info({table})")]
            with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in src.execute(f"SELECT {', '.join(columns)} FROM {table}"):
                    copy.write_row(row)
        conn.execute("SELECT setval(pg_get_serial_sequence('history', 'seq'), (SELECT max(seq) FROM history))")
        conn.execute("ANALYZE")
    src.close()


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50": round(statistics.median(ordered), 2), "p99": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 2),
            "n": len(ordered)}


def timed(run: Callable[[], Any], samples: int) -> tuple[dict[str, float], Any]:
    took, last = [], None
    for _ in range(samples):
        started = time.perf_counter()
        last = run()
        took.append((time.perf_counter() - started) * 1000)
    return percentiles(took), last


def query_items(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)


def measure(apis: dict[str, FhirApi], plans: int, samples: int) -> dict[str, Any]:
    careplan, encounters = apis["careplan"], apis["encounters"]
    rng = random.Random(7)
    out: dict[str, Any] = {}
    out["read by id (raw baseline)"], _ = timed(lambda: careplan.store.read("CarePlan", f"cp{rng.randrange(plans)}"),
                                                samples)
    for name, api, rtype, query in (
            ("CarePlan?patient=X", careplan, "CarePlan", "patient={}"),
            ("Goal?patient=X&lifecycle-status=active", careplan, "Goal", "patient={}&lifecycle-status=active"),
            ("Encounter?patient=X&date=ge2026-01-01", encounters, "Encounter", "patient={}&date=ge2026-01-01")):
        figures, body = timed(lambda api=api, rtype=rtype, query=query: api.search(
            rtype, query_items(query.format(f"Patient/p{rng.randrange(PATIENTS)}")), False).body, samples)
        out[name] = {**figures, "matches_last": len(body.get("entry", [])), "total_last": body.get("total")}
    # _lastUpdated paging: the first page after a point a tenth into the plans, then its next links.
    first = careplan.store.read("CarePlan", f"cp{plans // 10}").last_updated
    query = f"_lastUpdated=ge{first}&_sort=_lastUpdated&_count=50"
    pages, took, seen = 0, [], 0
    items = query_items(query)
    while pages < samples:
        started = time.perf_counter()
        body = careplan.search("CarePlan", items, False).body
        took.append((time.perf_counter() - started) * 1000)
        pages, seen = pages + 1, seen + len(body.get("entry", []))
        following = next((lk["url"] for lk in body["link"] if lk["relation"] == "next"), None)
        if following is None:
            items = query_items(query)
            continue
        items = query_items(urlsplit(following).query)
    out["_lastUpdated paging, next links"] = {**percentiles(took), "pages": pages, "resources": seen}
    deep = f"{query}&_offset={plans * 8 // 10}"
    out["the same page by _offset, 80% deep (contrast)"], _ = timed(
        lambda: careplan.search("CarePlan", query_items(deep), False).body, max(10, samples // 20))
    return out


def run_profile(profile: str, tmp: Path, plans: int, samples: int, sqlite_files: dict[str, Path]) -> dict[str, Any]:
    env = store_env(profile)
    locators = {s: str(sqlite_files[s]) if profile == "sqlite" else env[f"IOP_{s.upper()}_DB"]
                for s in ("careplan", "encounters")}
    if profile == "postgresql":
        for service, url in locators.items():
            copy_to_postgresql(sqlite_files[service], url)
    apis = {s: FhirApi(open_store(loc), registry(s), f"http://127.0.0.1/{s}/fhir") for s, loc in locators.items()}
    try:
        return measure(apis, plans, samples)
    finally:
        for api in apis.values():
            api.store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.search_scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--plans", type=int, default=100_000)
    parser.add_argument("--profile", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--samples", type=int, default=400)
    args = parser.parse_args(argv)
    profiles = ["sqlite", "postgresql"] if args.profile == "both" else [args.profile]
    results: dict[str, Any] = {"benchmark": "search_scale", "python": platform.python_version(),
                               "cpus": os.cpu_count(), "plans": args.plans, "goals": 2 * args.plans,
                               "encounters": args.plans, "patients": PATIENTS, "profiles": {}}
    with tempfile.TemporaryDirectory(prefix="iop-search-") as tmp_dir:
        tmp = Path(tmp_dir)
        files = {s: tmp / f"{s}.db" for s in ("careplan", "encounters")}
        stores = {s: open_store(str(f)) for s, f in files.items()}
        results["load_s"] = {"careplan": round(load(stores["careplan"], registry("careplan"), plan_with_goals,
                                                    args.plans), 1),
                             "encounters": round(load(stores["encounters"], registry("encounters"), encounter,
                                                      args.plans), 1)}
        for store in stores.values():
            store.close()
        pg = PgServer() if "postgresql" in profiles else None
        try:
            if pg:
                pg.start()
            for profile in profiles:
                results["profiles"][profile] = run_profile(profile, tmp, args.plans, args.samples, files)
        finally:
            if pg:
                pg.stop()
    results["load_average_1m"] = round(os.getloadavg()[0], 2)
    print(report(results))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def verdict(name: str, figures: dict[str, Any]) -> str:
    if "baseline" in name or "contrast" in name:
        return ""
    return "PASS" if figures["p50"] <= P50_MS and figures["p99"] <= P99_MS else "MISS"


def report(results: dict[str, Any]) -> str:
    lines = [f"search at scale: {results['plans']} CarePlans, {results['goals']} Goals, {results['encounters']} "
             f"Encounters of {results['patients']} patients (loaded in {results['load_s']['careplan']} + "
             f"{results['load_s']['encounters']} s); in process; target p50 <= {P50_MS:g} ms, p99 <= {P99_MS:g} ms"]
    for profile, figures in results["profiles"].items():
        lines.append(f"\n  {profile}")
        for name, f in figures.items():
            what = f"  ({f['matches_last']} matches the last time)" if "matches_last" in f else ""
            lines.append(f"    {name:<48} p50 {f['p50']:7.2f} ms  p99 {f['p99']:7.2f} ms  {verdict(name, f):4}{what}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
