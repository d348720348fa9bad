"""The suite on the 3-node cluster: intake and careplan as real processes (gunicorn web + worker, careplan with two
workers of distinct IOP_REPLICA) against KAFKA_BOOTSTRAP_SERVERS = the cluster, topics with RF 3 and min ISR 2,
stores on SQLite (the default) under a temporary var dir. Ports apart from the main suite's, so both can run."""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.support import processes
from tests.support.broker import Cluster
from tests.support.failure_watch import FailureWatch
from tests.support.ports import port
from tests.support.scripts import TEST_VAR
from tests.support.waiting import wait_until

# The services on the path from an intake to its plan (the other two would only add load on two CPUs).
PORTS = {"intake": port(18141), "careplan": port(18142)}
CAREPLAN_REPLICAS = ("careplan-worker-1", "careplan-worker-2")
SESSION_MS = 6000  # a dead worker's partitions move after this (the broker's smallest allowed session timeout)


@dataclass
class ClusterSuite:
    cluster: Cluster
    var_dir: Path
    env: dict[str, str]
    procs: dict[str, processes.Proc] = field(default_factory=dict)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{PORTS[service]}/fhir"

    def db(self, service: str) -> Path:
        return self.var_dir / f"{service}.db"

    def careplan_workers(self) -> list[processes.Proc]:
        return [self.procs[r] for r in CAREPLAN_REPLICAS]

    def start_worker(self, name: str, service: str, replica: str | None = None) -> processes.Proc:
        env = {**self.env, **({"IOP_REPLICA": replica} if replica else {})}
        proc = processes.worker(service, env, self.var_dir)
        # Named apart from the main suite's workers, which the failure watch settles before judging.
        proc.name, proc.log = f"cluster-{name}", self.var_dir / "log" / f"{name}.log"
        self.procs[name] = proc.start()
        return proc


def _ready(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="package")
def kafka_cluster() -> Iterator[Cluster]:
    """A 3-node KRaft cluster (deploy/kafka/cluster.sh), formatted fresh, stopped after these tests: its three
    JVMs would otherwise idle through the rest of the run."""
    c = Cluster(TEST_VAR)
    c.start(fresh=True)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def cluster_suite(kafka_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSuite]:
    var_dir = tmp_path_factory.mktemp("cluster-suite")
    extra = {"IOP_KAFKA_REPLICATION_FACTOR": "3", "IOP_KAFKA_MIN_INSYNC_REPLICAS": "2",
             "IOP_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_MS),
             # A loaded machine's 3 nodes may take longer than 10 s to acknowledge a backlog on 2 copies.
             "IOP_KAFKA_DELIVERY_TIMEOUT_MS": "30000"}
    for name, p in PORTS.items():
        extra[f"IOP_{name.upper()}_PORT"] = str(p)
        extra[f"IOP_{name.upper()}_BASE_URL"] = f"http://127.0.0.1:{p}/fhir"
    env = processes.service_env(var_dir, kafka_cluster.bootstrap, extra)
    suite = ClusterSuite(kafka_cluster, var_dir, env)
    try:
        for service, p in PORTS.items():
            web = processes.web(service, env, var_dir, p)
            web.name, web.log = f"cluster-{service}-web", var_dir / "log" / f"{service}-web.log"
            suite.procs[f"{service}-web"] = web.start()
            if service == "careplan":
                for replica in CAREPLAN_REPLICAS:
                    suite.start_worker(replica, service, replica)
            else:
                suite.start_worker(f"{service}-worker", service)
        for service, p in PORTS.items():
            wait_until(lambda p=p: _ready(f"http://127.0.0.1:{p}/readyz"), 90, 0.2, f"{service} ready")
        yield suite
    finally:
        for proc in suite.procs.values():
            proc.stop()
        if (var_dir / "log").exists():
            shutil.copytree(var_dir / "log", TEST_VAR / "cluster-suite-logs", dirs_exist_ok=True)


@pytest.fixture
def cluster_failures(kafka_cluster: Cluster) -> Iterator[FailureWatch]:
    """Like the main suite's watch: the test fails when an event reached a DLQ or a handler error was logged."""
    watch = FailureWatch(kafka_cluster.bootstrap)
    window = watch.open()
    yield watch
    findings = watch.close_window(window)
    watch.close()
    if findings:
        pytest.fail("events went wrong during the test:\n  " + "\n  ".join(map(str, findings)), pytrace=False)
