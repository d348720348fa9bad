"""A service's worker process: the outbox relay, its consumers and its clock-driven jobs.

Any number of replicas may run against one store: one relay publishes at a time (a lease), and each
clock-driven job runs once per period across them (shared/replicas.py).
"""
from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from kafka.errors import KafkaError

from shared import metrics, tracing
from shared.config import Settings
from shared.events import kafka
from shared.events.consumer import ConsumerRunner, Handler, RunnerConfig
from shared.events.relay import OutboxRelay
from shared.fhir.store import Store
from shared.logs import configure, get_logger
from shared.replicas import claim_period

log = get_logger("iop.worker")


@dataclass
class WorkerSpec:
    settings: Settings
    store: Store
    handlers: dict[str, Handler] = field(default_factory=dict)
    topics: list[str] = field(default_factory=list)
    jobs: list[tuple[float, Callable[[], None]]] = field(default_factory=list)  # (every seconds, job)
    loops: list[Callable[[threading.Event], None]] = field(default_factory=list)  # long-running, until stop

    @property
    def group(self) -> str:
        return f"iop-{self.settings.service}"


def _connect(make: Callable, stop: threading.Event, what: str):
    delay = 0.5
    while not stop.is_set():
        try:
            return make()
        except KafkaError:
            log.warning("kafka not reachable yet", client=what, retry_s=delay)
            stop.wait(delay)
            delay = min(delay * 2, 5.0)
    return None


def job_name(group: str, index: int, job: Callable[[], None]) -> str:
    return f"{group}:{getattr(job, '__name__', '')}:{index}"


def _run_jobs(jobs: list[tuple[float, Callable[[], None]]], stop: threading.Event, store: Store | None = None,
              group: str = "") -> None:
    """Each job every `every` seconds; with a store, only in the replica that claims the period first."""
    due = {i: 0.0 for i in range(len(jobs))}
    while not stop.is_set():
        for i, (every, job) in enumerate(jobs):
            if time.monotonic() >= due[i]:
                name = job_name(group, i, job)
                try:
                    if store is None or claim_period(store, name, every):
                        job()
                    else:
                        log.debug("job ran in another replica this period", job=name)
                except Exception:  # noqa: BLE001 - a job failure must not stop the worker
                    log.error("job failed", exc_info=True, job=name)
                due[i] = time.monotonic() + every
        stop.wait(max(0.0, min(due.values()) - time.monotonic()))  # asleep until the next is due, or the stop


def _serve_metrics(s: Settings) -> None:
    try:
        metrics.serve_worker_metrics(s.worker_metrics_port)
    except OSError as exc:  # the port is taken: the worker's job matters more than its figures
        log.warning("worker metrics not served", port=s.worker_metrics_port, error=type(exc).__name__)


def run_worker(spec: WorkerSpec, stop: threading.Event | None = None) -> None:
    """Blocks until SIGTERM/SIGINT (or `stop`): finishes the record in hand, commits, leaves the group."""
    s = spec.settings
    configure(s.log_level, s.service)
    tracing.configure(s.service)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    # The relay and the consumer's dead letters each have a producer of their own, made when first needed
    # and replaced when broken: one's outage or renewal never closes a producer the other is using.
    make_producer = partial(kafka.producer, s.kafka_bootstrap)
    relay = OutboxRelay(spec.store, make_producer, s.relay_poll_ms, lease_s=s.relay_lease_s)
    threads = [threading.Thread(target=relay.run, args=(stop,), name="relay", daemon=True)]
    if spec.jobs:
        threads.append(threading.Thread(target=_run_jobs, args=(spec.jobs, stop, spec.store, spec.group),
                                        name="jobs", daemon=True))
    threads += [threading.Thread(target=loop, args=(stop,), name=getattr(loop, "__qualname__", "loop"), daemon=True)
                for loop in spec.loops]
    for t in threads:
        t.start()
    _serve_metrics(s)
    log.info("worker started", group=spec.group)
    if spec.handlers:
        consumer = _connect(lambda: kafka.consumer(s.kafka_bootstrap, spec.group, spec.topics), stop, "consumer")
        if consumer is not None:
            config = RunnerConfig(spec.group, spec.handlers, spec.topics, s.consumer_max_attempts,
                                  s.consumer_backoff_ms, full_validation=s.event_validation == "full",
                                  linger_ms=s.consumer_linger_ms)
            ConsumerRunner(spec.store, consumer, make_producer, config).run(stop)
    stop.wait()
    for t in threads:
        t.join(timeout=35)
    log.info("worker stopped", group=spec.group)
