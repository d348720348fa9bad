"""The cluster topology end to end, as `make run-cluster` starts it (deploy/suite.sh run-cluster) on test ports:
two web and two worker replicas per service under supervisord, HAProxy on the services' ports, PostgreSQL and
the 3-node Kafka cluster where their scripts exist (SQLite and one broker otherwise); an intake through the front
yields its plan, `iop status` shows every replica, a killed web replica is routed around and started again, and
`make stop` leaves nothing behind."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

from shared import topology
from tests.support.auth import TEST_SECRET
from tests.support.events import EventWatcher
from tests.support.ports import port
from tests.support.scripts import SUITE_SH, gone, listening, operator_env, scratch_var
from tests.support.stream import IntakeStream, one_plan_each
from tests.support.subreaper import Subreaper
from tests.support.waiting import wait_until

SERVICES = ("intake", "careplan", "encounters", "aftercare")
# Ports ending in digits no other test port ends in (offsets move ports by hundreds): see test_deploy.py.
FRONTS = {service: port(18261 + i) for i, service in enumerate(SERVICES)}
REPLICA_BASE = port(18340)  # replicas on REPLICA_BASE + 10 * service + n: 18341-18372 before the offset
KAFKA = port(19255)  # one broker, or the cluster's first node (then +1, +2; controllers at +10)
PG = port(18247)


def cluster_env(var: Path, pg_dir: Path) -> dict[str, str]:
    return operator_env(var, IOP_REPLICA_PORT_BASE=str(REPLICA_BASE), IOP_KAFKA_PORT=str(KAFKA),
                        IOP_KAFKA_CONTROLLER_PORT=str(KAFKA + 1), IOP_KAFKA_CLUSTER_PORT=str(KAFKA),
                        IOP_KAFKA_CLUSTER_CONTROLLER_PORT=str(KAFKA + 10), IOP_KAFKA_HEAP="256m",
                        IOP_PG_PORT=str(PG), IOP_PG_DIR=str(pg_dir), IOP_PG_DURABLE="0",
                        IOP_WEB_WORKERS="1", IOP_WEB_THREADS="2", IOP_AUTH_HS256_SECRET=TEST_SECRET,
                        **{f"IOP_{s.upper()}_PORT": str(p) for s, p in FRONTS.items()})


def test_run_cluster_serves_through_haproxy_shows_every_replica_and_stops_clean(tmp_path: Path) -> None:
    var = scratch_var(tmp_path)
    # Outside pytest's own directories, which only root may enter: PostgreSQL runs as the postgres user.
    pg_dir = Path(tempfile.mkdtemp(prefix="iop-cluster-pg-"))
    os.chmod(pg_dir, 0o755)
    try:
        env = cluster_env(var, pg_dir / "cluster")
        with Subreaper() as parent:
            pids: list[int] = []
            try:
                run = parent.run([SUITE_SH, "run-cluster"], env, timeout=600)
                pids = supervised(var)
                assert run.rc == 0, run.output
                assert f"postgres: running on 127.0.0.1:{PG}" in run.stdout, run.stdout
                assert f"topics: 8 present at {bootstrap_list()} (8 created, replication factor 3, " \
                       "min.insync.replicas 2)" in run.stdout, run.stdout
                assert set(topology.saved_state(var)["stores"].values()) == {"postgresql"}
                for service in SERVICES:
                    assert (f"{service}: ready  http://127.0.0.1:{FRONTS[service]}/fhir  (2 web, 2 worker replicas "
                            f"behind HAProxy;") in run.stdout, run.stdout
                bootstrap = topology.saved_state(var)["kafka_bootstrap"]
                an_intake_through_the_front_yields_its_plan(bootstrap)
                iop_status_shows_every_replica(env)
                pids += a_killed_web_replica_is_routed_around_and_started_again(var)
            finally:
                stop = parent.run(["make", "--no-print-directory", "stop"], env, timeout=300)
            assert stop.rc == 0, stop.output
            assert "postgres: stopped" in stop.stdout, stop.output
            assert [pid for pid in pids if not gone(pid)] == []
            kafka = [KAFKA + n for n in (0, 1, 2, 10, 11, 12)]
            bound = [*FRONTS.values(), *range(REPLICA_BASE + 1, REPLICA_BASE + 33), *kafka, PG]
            assert [p for p in bound if listening(p)] == []
    finally:
        shutil.rmtree(pg_dir, ignore_errors=True)


def bootstrap_list() -> str:
    return ",".join(f"127.0.0.1:{KAFKA + n}" for n in range(3))


def supervised(var: Path) -> list[int]:
    main = topology.supervisord_pid(var)
    return ([main] if main else []) + [i["pid"] for i in topology.process_info(var).values() if i["pid"]]


def an_intake_through_the_front_yields_its_plan(bootstrap: str) -> None:
    watcher = EventWatcher(bootstrap)
    try:
        with IntakeStream(f"http://127.0.0.1:{FRONTS['intake']}/fhir") as stream:
            wait_until(lambda: stream.count() >= 3, 60, 0.1, "intakes through HAProxy")
        assert set(stream.statuses) == {200}, stream.statuses
        one_plan_each(f"http://127.0.0.1:{FRONTS['careplan']}/fhir", stream.accepted, watcher)
    finally:
        watcher.close()


def iop_status_shows_every_replica(env: dict[str, str]) -> None:
    def shown() -> str:
        out = subprocess.run([sys.executable, "-m", "shared.cli", "status"], env=env, capture_output=True,
                             text=True, timeout=120).stdout
        return out if "could not read" not in out and re.search(r"^  iop-careplan\s", out, re.M) else ""

    out = wait_until(shown, 60, 1, "iop status with the consumer groups' members")
    assert "processes (cluster topology, under supervisord):" in out, out
    for service in SERVICES:
        for n in (1, 2):
            web = re.search(rf"^  {service}-web-{n}\s+RUNNING\s+pid \d+\s+ready.*  haproxy UP$", out, re.M)
            assert web, out
            assert re.search(rf"^  {service}-worker-{n}\s+RUNNING\s+pid \d+", out, re.M), out
    assert re.search(r"^  haproxy\s+RUNNING", out, re.M), out
    assert re.search(r"^  intake-worker-1 .*relay only", out, re.M), out
    for group, partitions in (("iop-careplan", 12), ("iop-encounters", 6), ("iop-aftercare", 24)):
        members = re.findall(rf"^  {group}\s+\S+\s+(\d+) partitions", out, re.M)
        assert len(members) == 2 and sum(map(int, members)) == partitions, (group, out)


def a_killed_web_replica_is_routed_around_and_started_again(var: Path) -> list[int]:
    killed = topology.process_info(var)["careplan-web-1"]["pid"]
    os.killpg(killed, signal.SIGKILL)  # the gunicorn master and its worker
    front = f"http://127.0.0.1:{FRONTS['careplan']}"
    answers = [requests.get(f"{front}/fhir/metadata", timeout=10).status_code for _ in range(10)]
    assert answers == [200] * 10

    def back() -> int | None:
        info = topology.process_info(var)["careplan-web-1"]
        up = topology.haproxy_servers(var).get("careplan-web-1") == "UP"
        return info["pid"] if info["statename"] == "RUNNING" and info["pid"] != killed and up else None

    return [wait_until(back, 120, 0.2, "careplan-web-1 started again and UP behind HAProxy")]
