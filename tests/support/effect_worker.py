"""A service worker for the outage tests: its relay publishes the store's outbox, its consumer applies the
events into the same store's effect table (tests/support/effect_consumer.py), both as run_worker runs them.

    python -m tests.support.effect_worker DB SERVICE TOPIC --servers HOST:PORT    (consumer group iop-SERVICE)
"""
from __future__ import annotations

import argparse

from shared.config import Settings
from shared.events.catalogue import BY_TYPE
from shared.events.worker import WorkerSpec, run_worker
from tests.support.effect_consumer import effect_store, make_handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("service")
    parser.add_argument("topic")
    parser.add_argument("--servers", required=True)
    args = parser.parse_args()
    settings = Settings(args.service, database=args.db, kafka_bootstrap=args.servers)
    handler = make_handler(0)
    handlers = {t: handler for t, et in BY_TYPE.items() if et.topic == args.topic}
    run_worker(WorkerSpec(settings, effect_store(args.db), handlers, [args.topic]))


if __name__ == "__main__":
    main()
