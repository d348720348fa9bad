"""Given deploy/suite.sh and `make run` run as an operator runs them, on moved ports and a var dir of their own,
they put everything on those ports under supervisord, which restarts what crashes, and tell the truth about which
processes run and what they logged.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import requests
from kafka import KafkaAdminClient

from shared import topology
from shared.config import ROOT
from shared.events.catalogue import ALL_TOPICS
from tests.support.auth import TEST_SECRET, bearer
from tests.support.broker import Broker
from tests.support.events import EventWatcher
from tests.support.examples import minimal
from tests.support.ports import port
from tests.support.scripts import SUITE_SH, gone, listening, operator_env, scratch_var
from tests.support.stream import IntakeStream, one_plan_each
from tests.support.subreaper import Result, Subreaper
from tests.support.waiting import wait_until

SERVICES = ("intake", "careplan", "encounters", "aftercare")
# Offsets move ports by hundreds: these end in digits that no other test port ends in, so two checkouts testing at
# once never meet on them.
PORTS = {service: port(18251 + i) for i, service in enumerate(SERVICES)}
KAFKA_PORT = port(19245)
SERVICE_PORTS = {f"IOP_{s.upper()}_PORT": str(p) for s, p in PORTS.items()}


def test_suite_sh_shows_every_service_on_the_moved_ports_and_broker(tmp_path: Path) -> None:
    env = operator_env(tmp_path, IOP_KAFKA_PORT="29192",
                       **SERVICE_PORTS)
    done = subprocess.run([SUITE_SH, "config"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(SERVICES)
    for service, line in zip(SERVICES, lines, strict=True):
        assert f" port={PORTS[service]} base_url=http://127.0.0.1:{PORTS[service]}/fhir " in line
        assert " kafka=127.0.0.1:29192 " in line and line.endswith(" sqlite_synchronous=FULL")


def test_suite_sh_refuses_a_wrong_setting_by_name_before_starting_anything(tmp_path: Path) -> None:
    env = operator_env(tmp_path, IOP_SQLITE_SYNCHRONOUS="OFF", IOP_KAFKA_PORT="29192",
                       **SERVICE_PORTS)
    try:
        done = subprocess.run([SUITE_SH, "start"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=90)
        assert done.returncode != 0
        assert "IOP_SQLITE_SYNCHRONOUS must be one of FULL, NORMAL, not 'OFF'" in done.stderr
        assert not (tmp_path / "run").exists() and not any(listening(p) for p in PORTS.values())
    finally:
        subprocess.run([SUITE_SH, "stop"], env=env, cwd=ROOT, capture_output=True, timeout=120)


def test_suite_sh_does_not_take_a_reused_pid_for_its_supervisord(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "120"])
    try:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "supervisord.pid").write_text(f"{stranger.pid}\n")
        env = operator_env(tmp_path, **SERVICE_PORTS)
        done = subprocess.run([SUITE_SH, "status"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1
        assert done.stdout.startswith("processes: none under supervisord for "), done.stdout
        stopped = subprocess.run([SUITE_SH, "stop"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert stopped.returncode == 0 and "none under supervisord" in stopped.stdout
        assert not gone(stranger.pid)
    finally:
        stranger.kill()
        stranger.wait()


def test_make_run_on_moved_ports_puts_everything_there_and_supervises_truthfully(broker: Broker,
                                                                                 tmp_path: Path) -> None:
    var = scratch_var(tmp_path)
    env = operator_env(var, IOP_KAFKA_PORT=str(KAFKA_PORT), IOP_KAFKA_CONTROLLER_PORT=str(KAFKA_PORT + 1),
                       IOP_KAFKA_HEAP="256m", IOP_WEB_WORKERS="1", IOP_WEB_THREADS="2",
                       IOP_AUTH_HS256_SECRET=TEST_SECRET, **SERVICE_PORTS)
    with Subreaper() as parent:
        pids: list[int] = []
        try:
            run = parent.run(["make", "--no-print-directory", "run"], env)
            pids = supervised_pids(var) + [int(p.read_text()) for p in var.glob("kafka/broker.pid")]
            assert run.rc == 0, run.output
            assert f"kafka: ready on 127.0.0.1:{KAFKA_PORT}" in run.stdout
            assert f"topics: {len(ALL_TOPICS)} present at 127.0.0.1:{KAFKA_PORT}" in run.stdout
            for service in SERVICES:
                assert f"{service}: ready  http://127.0.0.1:{PORTS[service]}/fhir  (1 web, 1 worker;" in run.stdout
            services_use_the_moved_broker_and_ports()
            web_log_holds_the_json_line_of_a_refused_request(var)
            pids += a_worker_killed_mid_stream_is_back_within_10_s_and_the_stream_completes_once(var)
            status = parent.run(["make", "--no-print-directory", "status"], env)
            assert re.search(r"^careplan-worker-1\s+RUNNING\s+pid \d+", status.stdout, re.M), status.output
            assert len(re.findall(r"^\S+-web-1\s+ready  http://127.0.0.1:\d+$", status.stdout, re.M)) == 4
        finally:
            stop = stop_everything(parent, env)
        assert stop.rc == 0, stop.output
        assert [pid for pid in pids if not gone(pid)] == []
        assert [p for p in (*PORTS.values(), KAFKA_PORT) if listening(p)] == []
        assert not (var / "run" / "supervisord.pid").exists() and not (var / "kafka" / "broker.pid").exists()


def supervised_pids(var: Path) -> list[int]:
    """supervisord's pid and its processes'."""
    main = topology.supervisord_pid(var)
    return ([main] if main else []) + [i["pid"] for i in topology.process_info(var).values() if i["pid"]]


def stop_everything(parent: Subreaper, env: dict[str, str]) -> Result:
    argv = ["make", "--no-print-directory", "stop"]
    try:
        return parent.run(argv, env)
    except RuntimeError:  # the parent is gone: stop all the same, and say so
        done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
        return Result(-1, done.stdout, done.stderr + "\nthe subreaper process had ended")


def services_use_the_moved_broker_and_ports() -> None:
    for service, web_port in PORTS.items():
        ready = requests.get(f"http://127.0.0.1:{web_port}/readyz", timeout=10).json()
        assert ready["checks"] == {"store": "ok", "kafka": "ok"}, (service, ready)
    admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{KAFKA_PORT}", request_timeout_ms=10000)
    try:
        assert set(ALL_TOPICS) <= set(admin.list_topics())
        groups = {"iop-careplan", "iop-encounters", "iop-aftercare"}
        wait_until(lambda: groups <= {g["group_id"] for g in admin.list_groups()}, 60, 0.5, "the workers' groups")
    finally:
        admin.close()
    base = f"http://127.0.0.1:{PORTS['careplan']}/fhir"
    created = requests.post(f"{base}/CarePlan", json=minimal("CarePlan", "deploy-check"), timeout=10,
                            headers={**bearer(), "Content-Type": "application/fhir+json"})
    assert created.status_code == 201, created.text
    assert created.headers["Location"].startswith(f"{base}/CarePlan/{created.json()['id']}")


def web_log_holds_the_json_line_of_a_refused_request(var: Path) -> None:
    refused = requests.get(f"http://127.0.0.1:{PORTS['careplan']}/fhir/CarePlan", timeout=10)
    assert refused.status_code == 401
    log = var / "log" / "careplan-web-1.log"

    def lines() -> list[dict]:
        found = []
        for line in log.read_text().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    wait_until(lambda: any(e.get("logger") == "iop.web" and e.get("status") == 401 and e.get("service") == "careplan"
                           for e in lines()), 10, 0.1, "the 401 in the web log")
    assert any(e.get("logger") == "gunicorn.error" and e["msg"].startswith("Listening at") for e in lines())
    for name in ("careplan-web-1", "careplan-worker-1"):  # supervisord adds nothing of its own to them
        text = (var / "log" / f"{name}.log").read_text().splitlines()
        assert text and all(line.startswith("{") and json.loads(line) for line in text), name


def a_worker_killed_mid_stream_is_back_within_10_s_and_the_stream_completes_once(var: Path) -> list[int]:
    """SIGKILL careplan's worker while intakes stream in: supervisord runs it again within 10 s, and within 10 s
    of that it consumes again (it rejoins its group as the same member: nothing waits for the dead one's session
    to expire); every intake accepted before, during and after yields exactly one plan.

    Most of the second interval is the interpreter's start-up, which a loaded machine stretches (3.6 s from the
    kill to a new plan on an idle machine; 11 s seen to the start alone with the load at 35 on two CPUs)."""
    watcher = EventWatcher(f"127.0.0.1:{KAFKA_PORT}")
    careplan = f"http://127.0.0.1:{PORTS['careplan']}/fhir"
    log = var / "log" / "careplan-worker-1.log"
    try:
        with IntakeStream(f"http://127.0.0.1:{PORTS['intake']}/fhir") as stream, requests.Session() as http:
            http.headers.update(bearer())
            wait_until(lambda: stream.count() >= 10, 60, 0.1, "intakes accepted before the kill")
            killed, offset = topology.process_info(var)["careplan-worker-1"]["pid"], log.stat().st_size
            os.kill(killed, signal.SIGKILL)
            killed_at, before = time.monotonic(), stream.count()

            def restarted() -> int | None:
                info = topology.process_info(var)["careplan-worker-1"]
                return info["pid"] if info["statename"] == "RUNNING" and info["pid"] != killed else None

            def started() -> bool:
                with log.open("rb") as f:
                    f.seek(offset)
                    return b'"msg":"worker started"' in f.read()

            def consuming_again() -> bool:  # a plan in careplan's store for an intake accepted after the kill
                later = stream.accepted[before:before + 3]
                return any(http.get(f"{careplan}/CarePlan", params={"patient": p}, timeout=10).json()["total"]
                           for p in later)

            restarted_pid = wait_until(restarted, 10, 0.05, "careplan-worker-1 running again")
            running_at = time.monotonic()
            wait_until(started, 10, 0.1, "the restarted worker's start")
            started_at = time.monotonic()
            wait_until(consuming_again, max(10 - (started_at - running_at), 0.1), 0.1,
                       "a plan made by the restarted worker within 10 s of its running again")
            print(f"careplan-worker-1 SIGKILLed: running again after {running_at - killed_at:.1f} s, started after "
                  f"{started_at - killed_at:.1f} s, consuming after {time.monotonic() - killed_at:.1f} s")
            wait_until(lambda: stream.count() >= before + 10, 60, 0.1, "intakes accepted after the restart")
        assert set(stream.statuses) == {200}, stream.statuses
        one_plan_each(careplan, stream.accepted, watcher)
    finally:
        watcher.close()
    return [restarted_pid]
