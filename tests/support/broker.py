"""The real Apache Kafka broker the tests run against, started by deploy/kafka/kafka.sh, and the 3-node cluster
of the failure tests, started by deploy/kafka/cluster.sh."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from kafka import KafkaAdminClient

from shared.config import ROOT
from shared.events.admin import create_topics, wait_for_kafka
from tests.support.ports import port as test_port
from tests.support.waiting import wait_until

KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"


class Broker:
    """A broker of the tests' own (ports 19092/19093 + IOP_TEST_PORT_OFFSET, data under var/test) or an existing one."""

    def __init__(self, var_dir: Path, port: int = test_port(19092)) -> None:
        self.external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        self.var_dir, self.port = var_dir, port
        self.bootstrap = self.external or f"127.0.0.1:{port}"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "IOP_VAR_DIR": str(self.var_dir), "IOP_KAFKA_PORT": str(self.port),
                "IOP_KAFKA_CONTROLLER_PORT": str(self.port + 1)}

    def _script(self, action: str) -> None:
        subprocess.run([str(KAFKA_SH), action], env=self._env(), check=True, cwd=ROOT)

    def start(self, fresh: bool = False) -> None:
        if self.external:
            wait_for_kafka(self.bootstrap, 60)
        else:
            if fresh:
                self._script("stop")
                shutil.rmtree(self.var_dir / "kafka" / "data", ignore_errors=True)
            self._script("start")
        create_topics(self.bootstrap)

    def stop(self) -> None:
        if not self.external:
            self._script("stop")

    def restart(self) -> None:
        if self.external:
            raise RuntimeError("cannot restart an external cluster")
        self._script("stop")
        self._script("start")


CLUSTER_SH = ROOT / "deploy" / "kafka" / "cluster.sh"
NODES = (1, 2, 3)


class Cluster:
    """The tests' own 3-node KRaft cluster (deploy/kafka/cluster.sh), client ports 19040-19042 and controller ports
    19050-19052 moved by IOP_TEST_PORT_OFFSET, data under `var_dir`/kafka-cluster. Topics: RF 3, min ISR 2."""

    def __init__(self, var_dir: Path, port: int = test_port(19040), controller_port: int = test_port(19050)) -> None:
        self.var_dir, self.port, self.controller_port = var_dir, port, controller_port
        self.bootstrap = ",".join(f"127.0.0.1:{port + n - 1}" for n in NODES)

    def _env(self) -> dict[str, str]:
        return {**os.environ, "IOP_VAR_DIR": str(self.var_dir), "IOP_KAFKA_CLUSTER_PORT": str(self.port),
                "IOP_KAFKA_CLUSTER_CONTROLLER_PORT": str(self.controller_port)}

    def _script(self, action: str) -> None:
        subprocess.run([str(CLUSTER_SH), action], env=self._env(), check=True, cwd=ROOT)

    def start(self, fresh: bool = False) -> None:
        """Start every node that is not running and wait until all three answer; then create the topics."""
        if fresh:
            self._script("stop")
            shutil.rmtree(self.var_dir / "kafka-cluster", ignore_errors=True)
            # The jars are the single broker's: resolved once under the tests' var dir.
            subprocess.run([str(KAFKA_SH), "jars"], env=self._env(), check=True, cwd=ROOT)
        self._script("start")
        create_topics(self.bootstrap, rf=3, min_isr=2)

    def stop(self) -> None:
        self._script("stop")

    def pid(self, node: int) -> int:
        return int((self.var_dir / "kafka-cluster" / f"n{node}" / "broker.pid").read_text())

    def node_of_port(self, port: int) -> int:
        return port - self.port + 1

    def address(self, node: int) -> str:
        return f"127.0.0.1:{self.port + node - 1}"

    def kill(self, node: int) -> None:
        """SIGKILL: the node's JVM dies at once, without a controlled shutdown."""
        pid = self.pid(node)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not _running(pid), 30, 0.05, f"node {node} gone")

    def running(self, node: int) -> bool:
        try:
            return _running(self.pid(node))
        except (OSError, ValueError):
            return False

    def _describe(self, topics: list[str]) -> list[dict]:
        """Through the nodes that run: a client told of a dead one would try it first."""
        live = ",".join(self.address(n) for n in NODES if self.running(n))
        admin = KafkaAdminClient(bootstrap_servers=live, request_timeout_ms=5000, bootstrap_timeout_ms=10000)
        try:
            return admin.describe_topics(topics)
        finally:
            admin.close()

    def leaders(self, topics: list[str]) -> dict[tuple[str, int], int]:
        """(topic, partition) -> node id of its leader (-1 while it has none)."""
        return {(t["name"], p["partition_index"]): p["leader_id"] for t in self._describe(topics)
                for p in t["partitions"]}

    def in_sync(self, topics: list[str]) -> dict[tuple[str, int], list[int]]:
        """(topic, partition) -> the node ids of its in-sync replicas."""
        return {(t["name"], p["partition_index"]): sorted(p["isr_nodes"]) for t in self._describe(topics)
                for p in t["partitions"]}


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")
