"""Given deploy/suite.sh and `make run` run as an operator runs them, on moved ports and a var dir of their own,
they put everything on those ports and tell the truth about which processes run and what they logged.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import requests
from kafka import KafkaAdminClient

from shared.config import ROOT
from shared.events.catalogue import ALL_TOPICS
from tests.support.auth import TEST_SECRET, bearer
from tests.support.broker import Broker
from tests.support.examples import minimal
from tests.support.ports import port
from tests.support.scripts import SUITE_SH, gone, listening, operator_env, scratch_var, state_of
from tests.support.subreaper import Result, Subreaper
from tests.support.waiting import wait_until

SERVICES = ("intake", "careplan", "encounters", "aftercare")
PORTS = {service: port(18281 + i) for i, service in enumerate(SERVICES)}
KAFKA_PORT = port(19292)
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


def test_suite_sh_does_not_take_a_reused_pid_for_its_process(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "120"])
    try:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "careplan-worker.pid").write_text(f"{stranger.pid}\n")
        (tmp_path / "run" / "careplan-web.pid").write_text(f"{os.getpid()}\n")
        env = operator_env(tmp_path, **SERVICE_PORTS)
        done = subprocess.run([SUITE_SH, "status"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1
        assert re.search(r"^careplan\s+web=down\s+worker=down\s+ready=no", done.stdout, re.M), done.stdout
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
            pids = [int(p.read_text()) for p in [*var.glob("run/*.pid"), *var.glob("kafka/broker.pid")]]
            assert run.rc == 0, run.output
            assert f"kafka: ready on 127.0.0.1:{KAFKA_PORT}" in run.stdout
            assert f"topics: {len(ALL_TOPICS)} present at 127.0.0.1:{KAFKA_PORT}" in run.stdout
            services_use_the_moved_broker_and_ports()
            web_log_holds_the_json_line_of_a_refused_request(var)
            pids += a_killed_worker_is_reported_down_and_started_again(parent, env, var)
        finally:
            stop = stop_everything(parent, env)
        assert stop.rc == 0, stop.output
        assert [pid for pid in pids if not gone(pid)] == []
        assert [p for p in (*PORTS.values(), KAFKA_PORT) if listening(p)] == []
        assert not list((var / "run").glob("*.pid")) and not (var / "kafka" / "broker.pid").exists()


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
    log = var / "log" / "careplan-web.log"

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


def a_killed_worker_is_reported_down_and_started_again(parent: Subreaper, env: dict[str, str], var: Path
                                                        ) -> list[int]:
    pidfile = var / "run" / "careplan-worker.pid"
    killed = int(pidfile.read_text())
    os.kill(killed, signal.SIGKILL)
    wait_until(lambda: state_of(killed) == "Z", 10, 0.05, "the killed worker, not yet reaped")
    status = parent.run([SUITE_SH, "status"], env)
    assert status.rc == 1
    assert re.search(r"^careplan\s+web=up\s+worker=down", status.stdout, re.M), status.stdout
    start = parent.run([SUITE_SH, "start"], env)
    assert start.rc == 0, start.output
    restarted = int(pidfile.read_text())
    assert restarted != killed and not gone(restarted)
    status = parent.run([SUITE_SH, "status"], env)
    assert status.rc == 0, status.stdout
    assert len(re.findall(r"web=up\s+worker=up\s+ready=yes", status.stdout)) == len(SERVICES), status.stdout
    return [restarted]
