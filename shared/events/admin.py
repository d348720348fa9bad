"""Broker administration: wait until Kafka answers, create the contract's topics.

    python -m shared.events.admin wait [--timeout 90] [--pid PID]
    python -m shared.events.admin topics

Both talk to KAFKA_BOOTSTRAP_SERVERS, else to the local broker on IOP_KAFKA_PORT (shared.config).
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

from shared.config import kafka_bootstrap
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


def _answers(servers: str) -> bool:
    admin = KafkaAdminClient(bootstrap_servers=servers, bootstrap_timeout_ms=2000, request_timeout_ms=5000)
    try:
        brokers = admin.describe_cluster().get("brokers", [])
        return any(not b.get("is_fenced", False) for b in brokers)
    finally:
        admin.close()


def wait_for_kafka(servers: str, timeout_s: float = 90.0, pid: int | None = None) -> None:
    """Wait for an API round trip to an unfenced broker, not for a port.

    With `pid`, the broker that answers must be that process: another broker already on the port would
    answer while our JVM fails to bind and exits.
    """
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        if pid is not None and not _pid_alive(pid):
            raise RuntimeError(f"kafka process {pid} exited")
        try:
            if _answers(servers):
                if pid is None or pid_listens_on(pid, _first_port(servers)):
                    return
                last = f"{servers} is answered by another process than {pid}"
        except Exception as exc:  # noqa: BLE001 - connection refused while the JVM starts
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"Kafka at {servers} not ready after {timeout_s}s: {last!r}")


def create_topics(servers: str, topics: tuple[str, ...] = ALL_TOPICS, partitions: int = PARTITIONS) -> list[str]:
    """Create what is missing; existing topics are left as they are. Returns the names created."""
    admin = KafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=30000)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            try:
                admin.create_topics([NewTopic(t, partitions, 1) for t in missing])
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
    sub.add_parser("topics")
    args = parser.parse_args(argv)
    servers = bootstrap()
    try:
        if args.cmd == "wait":
            wait_for_kafka(servers, args.timeout, args.pid)
        else:
            created = create_topics(servers)
            print(f"topics: {len(ALL_TOPICS)} present at {servers} ({len(created)} created)")
    except (RuntimeError, TimeoutError) as exc:
        print(f"kafka: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
