"""Broker administration: wait until Kafka answers, create the contract's topics.

    python -m shared.events.admin wait [--timeout 90] [--pid PID] [--brokers N]
    python -m shared.events.admin topics

Both talk to KAFKA_BOOTSTRAP_SERVERS, else to the local broker on IOP_KAFKA_PORT (shared.config).
Topics are created with IOP_KAFKA_REPLICATION_FACTOR copies (default 1, one broker) and
`min.insync.replicas` from IOP_KAFKA_MIN_INSYNC_REPLICAS (default 1, or 2 from a replication factor of 3 on):
with acks=all, a write is acknowledged only once that many copies have it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from shared.config import env_int, kafka_bootstrap
from shared.events.catalogue import ALL_TOPICS, PARTITIONS

LISTEN = "0A"  # the TCP state LISTEN in /proc/net/tcp


def bootstrap() -> str:
    return kafka_bootstrap()


def _pid_alive(pid: int) -> bool:
    """Running, which a zombie (exited, not yet reaped) is not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def pid_listens_on(pid: int, port: int) -> bool:
    """Whether process `pid` itself holds the listening socket of `port` (Linux /proc)."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) in wanted:
                return True
        except OSError:
            continue
    return False


def _first_port(servers: str) -> int:
    return int(servers.split(",")[0].rsplit(":", 1)[1])


def replication_factor() -> int:
    """IOP_KAFKA_REPLICATION_FACTOR: how many brokers keep a copy of each partition (default 1)."""
    rf = env_int("IOP_KAFKA_REPLICATION_FACTOR", 1)
    if rf < 1:
        raise ValueError(f"IOP_KAFKA_REPLICATION_FACTOR must be at least 1, not {rf}")
    return rf


def min_insync_replicas(rf: int) -> int:
    """IOP_KAFKA_MIN_INSYNC_REPLICAS, by default 1 below a replication factor of 3 and 2 from 3 on."""
    default = 1 if rf < 3 else 2
    isr = env_int("IOP_KAFKA_MIN_INSYNC_REPLICAS", default)
    if not 1 <= isr <= rf:
        raise ValueError(f"IOP_KAFKA_MIN_INSYNC_REPLICAS must be between 1 and the replication factor {rf}, not {isr}")
    return isr


def _answers(servers: str, brokers: int = 1) -> bool:
    admin = KafkaAdminClient(bootstrap_servers=servers, bootstrap_timeout_ms=2000, request_timeout_ms=5000)
    try:
        known = admin.describe_cluster().get("brokers", [])
        return sum(not b.get("is_fenced", False) for b in known) >= brokers
    finally:
        admin.close()


def wait_for_kafka(servers: str, timeout_s: float = 90.0, pid: int | None = None, brokers: int = 1) -> None:
    """Wait for an API round trip to an unfenced broker (at least `brokers` of them in the cluster), not for a port.

    With `pid`, the broker that answers must be that process: another broker already on the port would
    answer while our JVM fails to bind and exits.
    """
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        if pid is not None and not _pid_alive(pid):
            raise RuntimeError(f"kafka process {pid} exited")
        try:
            if _answers(servers, brokers):
                if pid is None or pid_listens_on(pid, _first_port(servers)):
                    return
                last = f"{servers} is answered by another process than {pid}"
        except Exception as exc:  # noqa: BLE001 - connection refused while the JVM starts
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"Kafka at {servers} not ready after {timeout_s}s: {last!r}")


def create_topics(servers: str, topics: tuple[str, ...] = ALL_TOPICS, partitions: int = PARTITIONS,
                  rf: int | None = None, min_isr: int | None = None) -> list[str]:
    """Create what is missing; existing topics are left as they are. Returns the names created.

    `rf` and `min_isr` default to IOP_KAFKA_REPLICATION_FACTOR and IOP_KAFKA_MIN_INSYNC_REPLICAS.
    """
    rf = replication_factor() if rf is None else rf
    min_isr = min_insync_replicas(rf) if min_isr is None else min_isr
    admin = KafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=30000)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            config = {"min.insync.replicas": str(min_isr)}
            try:
                admin.create_topics([NewTopic(t, partitions, rf, topic_configs=config) for t in missing])
            except TopicAlreadyExistsError:
                pass
        return missing
    finally:
        admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shared.events.admin")
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wait")
    w.add_argument("--timeout", type=float, default=90.0)
    w.add_argument("--pid", type=int)
    w.add_argument("--brokers", type=int, default=1, help="unfenced brokers the cluster must have")
    sub.add_parser("topics")
    args = parser.parse_args(argv)
    servers = bootstrap()
    try:
        if args.cmd == "wait":
            wait_for_kafka(servers, args.timeout, args.pid, args.brokers)
        else:
            rf = replication_factor()
            created = create_topics(servers, rf=rf)
            print(f"topics: {len(ALL_TOPICS)} present at {servers} ({len(created)} created,"
                  f" replication factor {rf}, min.insync.replicas {min_insync_replicas(rf)})")
    except (RuntimeError, TimeoutError, ValueError) as exc:
        print(f"kafka: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
