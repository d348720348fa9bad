"""A consumer process for the delivery tests: each applied event inserts one effect row.

The effect table has no unique constraint, so a doubled effect would show as a second row. DB is a SQLite
path or a postgresql:// URL.
An event whose patient is listed in the `blocked` table fails as a poison message until
the test unblocks it (the "cause" that a DLQ replay waits for).

    python -m tests.support.effect_consumer DB GROUP TOPIC [--delay-ms N]
"""
from __future__ import annotations

import argparse
import signal
import threading
import time
from functools import partial

from shared.events import kafka
from shared.events.catalogue import BY_TYPE
from shared.events.consumer import ConsumerRunner, PoisonMessage, RunnerConfig
from shared.events.envelope import Event
from shared.fhir.store import Store, Transaction, open_store
from shared.logs import configure
from tests.support.engines import execute, script

EFFECT_SCHEMA = """
CREATE TABLE IF NOT EXISTS effect (n INTEGER PRIMARY KEY AUTOINCREMENT, ce_id TEXT, patient TEXT, subject TEXT);
CREATE TABLE IF NOT EXISTS blocked (patient TEXT PRIMARY KEY);
"""
EFFECT_SCHEMA_PG = """
CREATE TABLE IF NOT EXISTS effect (n BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, ce_id TEXT, patient TEXT,
  subject TEXT);
CREATE TABLE IF NOT EXISTS blocked (patient TEXT PRIMARY KEY);
"""


def effect_store(locator: str) -> Store:
    store = open_store(locator)
    script(store, EFFECT_SCHEMA, EFFECT_SCHEMA_PG)
    return store


def make_handler(delay_s: float):
    def apply(tx: Transaction, event: Event) -> None:
        if execute(tx, "SELECT 1 FROM blocked WHERE patient=?", (event.key,)):
            raise PoisonMessage(f"patient {event.key} is blocked")
        execute(tx, "INSERT INTO effect (ce_id, patient, subject) VALUES (?,?,?)", (event.id, event.key, event.subject))
        if delay_s:
            time.sleep(delay_s)
    return apply


def runner(store: Store, servers: str, group: str, topic: str, delay_s: float = 0.0) -> ConsumerRunner:
    handler = make_handler(delay_s)
    handlers = {t: handler for t, et in BY_TYPE.items() if et.topic == topic}
    config = RunnerConfig(group, handlers, [topic], max_attempts=3, backoff_ms=50, lag_every_s=1.0)
    return ConsumerRunner(store, kafka.consumer(servers, group, [topic]), partial(kafka.producer, servers), config)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("group")
    parser.add_argument("topic")
    parser.add_argument("--servers", required=True)
    parser.add_argument("--delay-ms", type=float, default=0)
    args = parser.parse_args()
    configure("INFO", "effect-consumer")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    runner(effect_store(args.db), args.servers, args.group, args.topic, args.delay_ms / 1000).run(stop)


if __name__ == "__main__":
    main()
