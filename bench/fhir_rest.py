"""How fast one careplan process creates and reads a realistic CarePlan, and what validation costs.

    python -m bench.fhir_rest

Three measurements, one process each, one client at a time (latency-bound, not a load test):
the app in-process through Flask's test client (no network), the same app under gunicorn (one
worker, as production runs it) over HTTP with one requests.Session, and `validate_resource` alone
on the CarePlan. The CarePlan is what careplan drafts at admission: three activities (group and
individual therapy, relapse-prevention psychoeducation), three Goals, Part 2 labels, a narrative.
Prints a table and writes bench/results/fhir_rest.json. Takes 10 to 15 s.
"""
from __future__ import annotations

import json
import os
import platform
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from services.careplan.app import create_app
from shared import codes
from shared.fhir.validation import validate_resource
from shared.serving import gunicorn_argv
from tests.support import processes
from tests.support.auth import TEST_SECRET, bearer, token
from tests.support.waiting import wait_until

RESULTS = Path(__file__).parent / "results" / "fhir_rest.json"
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
CREATES, READS, VALIDATIONS = 400, 1500, 2000
BUDGET_S = 4.0  # per measured phase, so that a slow machine still finishes in about half a minute
PATIENT = "bench-patient"


def goal(text: str, measure: str) -> dict[str, Any]:
    return {"resourceType": "Goal", "meta": {"security": codes.PART2_LABELS}, "lifecycleStatus": "active",
            "achievementStatus": {"coding": [{"system": codes.GOAL_ACHIEVEMENT, "code": "in-progress"}]},
            "description": {"text": text}, "subject": {"reference": f"Patient/{PATIENT}"},
            "startDate": "2025-03-04",
            "target": [{"measure": {"text": measure}, "dueDate": "2025-05-27"}]}


GOALS = [goal("Attend at least 80% of scheduled sessions", "attendance rate"),
         goal("No substance use for 30 consecutive days", "days abstinent"),
         goal("Use two coping skills when cravings occur", "coping skills used")]


def activity(text: str, coding: dict[str, str], days: list[str], hours: float, goal_refs: list[dict]) -> dict:
    repeat = {"boundsPeriod": {"start": "2025-03-04", "end": "2025-05-27"}, "frequency": len(days), "period": 1,
              "periodUnit": "wk", "dayOfWeek": days, "timeOfDay": ["09:00:00"], "duration": hours,
              "durationUnit": "h"}
    return {"detail": {"kind": "ServiceRequest", "code": {"coding": [coding], "text": text}, "status": "scheduled",
                       "scheduledTiming": {"repeat": repeat}, "goal": goal_refs}}


def care_plan(goal_ids: list[str]) -> dict[str, Any]:
    refs = [{"reference": f"Goal/{gid}", "display": g["description"]["text"]}
            for gid, g in zip(goal_ids, GOALS, strict=True)]
    return {
        "resourceType": "CarePlan", "meta": {"security": codes.PART2_LABELS},
        "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>IOP treatment plan: '
                                               "group therapy 3x/week, individual therapy weekly, relapse "
                                               "prevention weekly.</p></div>"},
        "identifier": [{"system": codes.IOP_IDENTIFIER + "/careplan", "value": "bench"}],
        "status": "active", "intent": "plan",
        "category": [{"coding": [{"system": codes.IOP_CAREPLAN, "code": "iop-treatment-plan"}]}],
        "title": "IOP treatment plan (ASAM 2.1)", "subject": {"reference": f"Patient/{PATIENT}"},
        "period": {"start": "2025-03-04", "end": "2025-05-27"}, "created": "2025-03-04", "goal": refs,
        "activity": [
            activity("Group therapy", {"system": codes.SNOMED, "code": "76168009", "display": "Group psychotherapy"},
                     ["mon", "wed", "fri"], 3.0, refs),
            activity("Individual therapy", {"system": codes.SNOMED, "code": "75516001", "display": "Psychotherapy"},
                     ["tue"], 1.0, refs[:2]),
            activity("Psychoeducation: relapse prevention",
                     {"system": codes.SNOMED, "code": "720177001", "display": "Drug relapse prevention program"},
                     ["thu"], 1.0, refs[1:]),
        ],
    }


def rate(operation: Callable[[int], None], count: int) -> tuple[float, int]:
    """Operations per second over `count` calls (or as many as fit in BUDGET_S), after a short warm-up."""
    for i in range(min(20, count)):
        operation(i)
    done, started = 0, time.perf_counter()
    while done < count and time.perf_counter() - started < BUDGET_S:
        operation(done)
        done += 1
    return done / (time.perf_counter() - started), done


def per_call_us(operation: Callable[[], Any], count: int) -> float:
    for _ in range(50):
        operation()
    started = time.perf_counter()
    for _ in range(count):
        operation()
    return (time.perf_counter() - started) / count * 1e6


def bench_validation() -> dict[str, float]:
    plan = care_plan(["g1", "g2", "g3"])
    text = json.dumps(plan)
    return {"validate_us": round(per_call_us(lambda: validate_resource(plan, "CarePlan"), VALIDATIONS), 1),
            "json_round_trip_us": round(per_call_us(lambda: json.dumps(json.loads(text)), VALIDATIONS), 1),
            "body_bytes": len(text)}


def bench_in_process(var: Path) -> dict[str, float]:
    app = create_app({"database": str(var / "in-process.db"), "log_level": "WARNING",
                      "auth_hs256_secret": TEST_SECRET})
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token()}"

    def post(body: dict) -> dict:
        resp = client.post("/fhir/" + body["resourceType"], data=json.dumps(body), headers=FHIR_JSON)
        assert resp.status_code == 201, resp.get_data(as_text=True)
        return resp.get_json(force=True)

    body = json.dumps(care_plan([post(g)["id"] for g in GOALS]))
    ids: list[str] = []

    def create(_: int) -> None:
        resp = client.post("/fhir/CarePlan", data=body, headers=FHIR_JSON)
        assert resp.status_code == 201
        ids.append(resp.headers["Location"].split("/")[-3])

    def read(i: int) -> None:
        assert client.get(f"/fhir/CarePlan/{ids[i % len(ids)]}", headers=FHIR_JSON).status_code == 200

    creates, n_creates = rate(create, CREATES)
    reads, n_reads = rate(read, READS)
    app.extensions["iop"].store.close()
    return {"creates_per_s": round(creates), "reads_per_s": round(reads), "creates": n_creates, "reads": n_reads}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_http(var: Path) -> dict[str, float]:
    port = free_port()
    root = f"http://127.0.0.1:{port}"
    env = processes.service_env(var, "127.0.0.1:9", extra={
        "IOP_READY_REQUIRES_KAFKA": "0", "IOP_LOG_LEVEL": "WARNING", "IOP_CAREPLAN_PORT": str(port),
        "IOP_CAREPLAN_BASE_URL": f"{root}/fhir"})
    argv = gunicorn_argv("careplan", port, workers=1, threads=4)
    web = processes.Proc("careplan-web", argv, env, var / "log" / "careplan-web.log").start()
    session = requests.Session()
    session.headers.update({**FHIR_JSON, **bearer()})
    try:
        wait_until(lambda: _ready(session, root), 60, 0.1, "careplan under gunicorn")
        goal_ids = [session.post(f"{root}/fhir/Goal", data=json.dumps(g)).json()["id"] for g in GOALS]
        body = json.dumps(care_plan(goal_ids))
        ids: list[str] = []

        def create(_: int) -> None:
            resp = session.post(f"{root}/fhir/CarePlan", data=body)
            assert resp.status_code == 201, resp.text
            ids.append(resp.headers["Location"].split("/")[-3])

        def read(i: int) -> None:
            assert session.get(f"{root}/fhir/CarePlan/{ids[i % len(ids)]}").status_code == 200

        creates, n_creates = rate(create, CREATES)
        reads, n_reads = rate(read, READS)
    finally:
        session.close()
        web.stop()
    return {"creates_per_s": round(creates), "reads_per_s": round(reads), "creates": n_creates, "reads": n_reads}


def _ready(session: requests.Session, root: str) -> bool:
    try:
        return session.get(f"{root}/readyz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="iop-bench-") as tmp:
        var = Path(tmp)
        validation = bench_validation()
        in_process = bench_in_process(var)
        http = bench_http(var / "http")
    results = {"benchmark": "fhir_rest", "resource": "CarePlan (3 activities, 3 goals)",
               "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
               "load_average_1m": round(os.getloadavg()[0], 2),  # figures are noisy on a busy machine
               "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "validation": validation, "flask_test_client": in_process, "http_gunicorn_1_worker": http,
               "seconds": round(time.perf_counter() - started, 1)}
    print(f"CarePlan with 3 activities and 3 goals, {validation['body_bytes']} bytes; one client, one process\n")
    print(f"{'':28}{'creates/s':>12}{'reads/s':>12}")
    print(f"{'Flask test client':28}{in_process['creates_per_s']:>12.0f}{in_process['reads_per_s']:>12.0f}")
    print(f"{'HTTP, gunicorn 1 worker':28}{http['creates_per_s']:>12.0f}{http['reads_per_s']:>12.0f}")
    print(f"\nvalidate_resource(CarePlan): {validation['validate_us']:.0f} µs per call "
          f"({1e6 / validation['validate_us']:.0f}/s); json.loads+dumps: {validation['json_round_trip_us']:.0f} µs")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nwritten to {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS} "
          f"in {results['seconds']} s")


if __name__ == "__main__":
    main()
