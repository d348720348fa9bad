"""What the REST breadth costs on one careplan process: a Bulk Data export of 10,000 resources, and searches that
include heavily.

    python -m bench.fhir_breadth [--resources 10000]

The app runs in-process (Flask test client, its own SQLite store under a temporary directory); the export job
runs in its own thread as under gunicorn. Seeds N resources (CarePlans, a third of them with two Goals and a
review Task), exporting once at a fifth of them and once at all, then measures:
- export: kick-off to a complete manifest, then the download of every NDJSON file: seconds, resources per
  second, and the peak of Python memory allocated from kick-off to manifest (tracemalloc), against the bytes
  exported: a streaming export stays far below the size of what it writes;
- include-heavy search: `CarePlan?_include=CarePlan:goal&_revinclude=Task:focus&_count=50` (50 plans with their
  Goals and Tasks, about 130 resources a page), and the same page without includes, p50/p95 in ms.
Prints a table and writes bench/results/fhir_breadth.json. Takes about a minute for 10,000 resources.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from services.careplan.app import create_app
from tests.support.auth import TEST_SECRET, bearer
from tests.support.examples import minimal

RESULTS = Path(__file__).parent / "results" / "fhir_breadth.json"
SEARCHES = 60
HEADERS = {"Accept": "application/fhir+json", **bearer()}


def seed(app: Any, total: int) -> None:
    """`total` resources, written as the service writes them (validated once), in transactions of 500."""
    api = app.extensions["iop"].api
    written = 0
    while written < total:
        with api.store.transaction() as tx:
            for _ in range(min(500, total - written)):
                patient = f"bench-{written % 997}"
                if written % 3 == 0 and total - written >= 4:
                    goals = [api.repo.create(tx, minimal("Goal", patient)) for _ in range(2)]
                    plan = api.repo.create(tx, {**minimal("CarePlan", patient), "goal": [
                        {"reference": f"Goal/{g.id}"} for g in goals]})
                    api.repo.create(tx, {**minimal("Task", patient), "focus": {"reference": f"CarePlan/{plan.id}"}})
                    written += 4
                else:
                    api.repo.create(tx, minimal("CarePlan", patient))
                    written += 1


def export(client: Any) -> dict[str, Any]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    started = time.perf_counter()
    kick = client.get("/fhir/$export", headers={**HEADERS, "Prefer": "respond-async"})
    assert kick.status_code == 202, kick.get_data(as_text=True)
    status = kick.headers["Content-Location"].split("/fhir", 1)[1]
    while (resp := client.get(f"/fhir{status}", headers=HEADERS)).status_code == 202:
        time.sleep(0.05)  # a client polling its status URL, as the spec has it
    assert resp.status_code == 200, resp.get_data(as_text=True)
    done = time.perf_counter()
    _, peak = tracemalloc.get_traced_memory()  # the export alone: the download below reads whole files
    tracemalloc.stop()
    exported, size = 0, 0
    for item in resp.json["output"]:
        file = client.get("/fhir" + item["url"].split("/fhir", 1)[1], headers=bearer())
        size += len(file.get_data())
        exported += item["count"]
    downloaded = time.perf_counter()
    return {"resources": exported, "export_s": round(done - started, 2), "download_s": round(downloaded - done, 2),
            "per_s": round(exported / (done - started)), "ndjson_bytes": size, "peak_python_bytes": peak,
            "files": len(resp.json["output"])}


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50": round(statistics.median(ordered), 1), "p95": round(ordered[int(len(ordered) * 0.95) - 1], 1),
            "n": len(ordered)}


def searches(client: Any) -> dict[str, Any]:
    out = {}
    for name, query in (("include_heavy", "_include=CarePlan:goal&_revinclude=Task:focus&_count=50"),
                        ("plain", "_count=50")):
        samples, entries = [], 0
        for i in range(SEARCHES):
            started = time.perf_counter()
            resp = client.get(f"/fhir/CarePlan?{query}&_offset={(i * 150) % 3000}", headers=HEADERS)
            samples.append((time.perf_counter() - started) * 1000)
            entries = max(entries, len(resp.json.get("entry", [])))
        out[name] = {**percentiles(samples), "entries_per_page": entries}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fhir_breadth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=10_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="iop-breadth-") as tmp:
        app = create_app({"database": str(Path(tmp) / "careplan.db"), "var_dir": Path(tmp),
                          "auth_hs256_secret": TEST_SECRET, "log_level": "WARNING"})
        client = app.test_client()
        seed(app, args.resources // 5)
        smaller = export(client)  # the same export on a fifth of the data: a streaming export's peak barely moves
        started = time.perf_counter()
        seed(app, args.resources - args.resources // 5)
        seeded = time.perf_counter() - started
        results = {"benchmark": "fhir_breadth", "python": platform.python_version(), "cpus": os.cpu_count(),
                   "load_average_1m": round(os.getloadavg()[0], 2), "seed_s": round(seeded, 1),
                   "export": export(client), "export_fifth": smaller, "search": searches(client)}
        app.extensions["iop"].store.close()
    e, s, f = results["export"], results["search"], results["export_fifth"]
    print(f"careplan, in-process, {e['resources']} resources\n")
    print(f"export of {e['resources']} resources ({e['files']} NDJSON files, {e['ndjson_bytes'] / 1e6:.1f} MB): "
          f"{e['export_s']} s to the manifest ({e['per_s']}/s), {e['download_s']} s to download; "
          f"peak Python memory {e['peak_python_bytes'] / 1e6:.1f} MB")
    print(f"  (a fifth of it, {f['resources']} resources: {f['export_s']} s, "
          f"peak {f['peak_python_bytes'] / 1e6:.1f} MB)")
    for name, label in (("include_heavy", "search with _include + _revinclude"), ("plain", "the same page, plain")):
        r = s[name]
        print(f"{label:36} p50 {r['p50']:6.1f} ms  p95 {r['p95']:6.1f} ms  ({r['entries_per_page']} entries a page)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
