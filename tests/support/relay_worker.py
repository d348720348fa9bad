"""A worker process whose only work is its outbox relay (run_worker with no consumer), for the replica tests.

    python -m tests.support.relay_worker STORE --servers HOST:PORT      (STORE: a SQLite path or a postgresql:// URL)
"""
from __future__ import annotations

import argparse

from shared.config import Settings
from shared.events.worker import WorkerSpec, run_worker
from tests.support.engines import open_locator


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("--servers", required=True)
    args = parser.parse_args()
    settings = Settings("relays", database=args.store, kafka_bootstrap=args.servers)
    run_worker(WorkerSpec(settings, open_locator(args.store)))


if __name__ == "__main__":
    main()
