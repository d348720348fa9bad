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

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from shared.config import kafka_bootstrap
from shared.events.catalogue import ALL_TOPICS, PARTITIONS


def bootstrap() -> str:
    return kafka_bootstrap()


def _pid_alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for_kafka(servers: str, timeout_s: float = 90.0, pid: int | None = None) -> None:
    """Wait for an API round trip to an unfenced broker, not for a port."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            raise RuntimeError(f"kafka process {pid} exited")
        try:
            admin = KafkaAdminClient(bootstrap_servers=servers, bootstrap_timeout_ms=2000, request_timeout_ms=5000)
            try:
                brokers = admin.describe_cluster().get("brokers", [])
                if any(not b.get("is_fenced", False) for b in brokers):
                    return
            finally:
                admin.close()
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
