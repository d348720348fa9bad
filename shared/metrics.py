"""Prometheus metrics of a service: what its processes count, and what its store holds at scrape time.

Counters and histograms are prometheus_client's. Under gunicorn, deploy/gunicorn.conf.py points
PROMETHEUS_MULTIPROC_DIR at a directory of the service's own (emptied when gunicorn starts), every web
process writes its values there, and one scrape of `/metrics` adds them all up. A worker process keeps its
values in memory and serves them on IOP_WORKER_METRICS_PORT (`serve_worker_metrics`).

The figures that are facts of the store (outbox backlog and age, consumer lag, work-queue depth, Subscriptions
by status, handler errors) are read from it when `/metrics` is scraped (`StoreCollector`), so every web process
of a service, whichever a scrape reaches, reports the same values. Every metric is listed in the README.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

disable_created_metrics()  # `_created` series double every counter and mean nothing across worker restarts

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BACKLOG_LIMIT = 10000  # what a scrape counts at most of the outbox and of a work queue

HTTP_REQUESTS = Counter("iop_http_requests", "HTTP requests answered, by route template and status",
                        ["method", "route", "status"])
HTTP_SECONDS = Histogram("iop_http_request_duration_seconds", "Time to answer an HTTP request",
                         ["method", "route", "status"], buckets=BUCKETS)
EVENTS_CONSUMED = Counter("iop_events_consumed", "Records a consumer group fetched from a topic", ["group", "topic"])
EVENTS_APPLIED = Counter("iop_events_applied", "Events whose effect a consumer group stored", ["group", "event_type"])
EVENTS_DUPLICATE = Counter("iop_events_duplicates", "Events skipped because the group had applied them already",
                           ["group", "event_type"])
EVENTS_DEAD_LETTERED = Counter("iop_events_dead_lettered", "Records sent to <topic>.dlq, by failure kind",
                               ["group", "topic", "kind"])
OUTBOX_PUBLISHED = Counter("iop_outbox_published", "Outbox rows the relay published and the broker acknowledged")
EHR_DELIVERIES = Counter("iop_ehr_deliveries", "Notifications to subscribed EHRs, by outcome", ["outcome"])
EHR_SECONDS = Histogram("iop_ehr_delivery_duration_seconds", "Time of an EHR's answer to a notification",
                        ["outcome"], buckets=BUCKETS)


def multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def exposition(*collectors: Collector) -> bytes:
    """The text of one scrape: this process's metrics (or all web processes' of the service) and `collectors`."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        MultiProcessCollector(registry)
    else:
        registry.register(_Own())
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry)


class _Own(Collector):
    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def serve_worker_metrics(port: int, host: str = "0.0.0.0") -> Any:
    """A worker's `/metrics` on `port` (0: none). A port in use is logged by the caller, never fatal."""
    if port <= 0:
        return None
    server, _thread = start_http_server(port, host)
    return server


def _age_s(instant: str, now: float) -> float:
    try:
        return max(0.0, now - datetime.fromisoformat(instant.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0.0


class StoreCollector(Collector):
    """What the service's store says at scrape time; `extra` adds gauges only a web process knows (Kafka up)."""

    def __init__(self, store: Any, subscriptions: bool = False,
                 extra: Callable[[], Iterator[Metric]] | None = None) -> None:
        self.store, self.subscriptions, self.extra = store, subscriptions, extra

    def collect(self) -> Iterator[Metric]:
        try:  # all read first: a store that fails half-way yields none of them, never a 500 to the scraper
            found = [*self._outbox(), *self._lag(), *self._queues(), *self._handler_errors(),
                     *(self._subscriptions() if self.subscriptions else ())]
        except Exception:  # noqa: BLE001 - the store is away (StoreUnavailable) or busy: say so, and go on
            found = []
        yield from found
        yield GaugeMetricFamily("iop_store_up", "1 when the store answered this scrape's questions",
                                value=1.0 if found else 0.0)
        if self.extra is not None:
            yield from self.extra()

    def _outbox(self) -> Iterator[Metric]:
        rows = self.store.unsent_events(BACKLOG_LIMIT)
        oldest = next((v for k, v in rows[0].headers if k == "ce_time"), "") if rows else ""
        yield GaugeMetricFamily("iop_outbox_backlog", "Outbox rows committed but not yet published to Kafka",
                                value=len(rows))
        yield GaugeMetricFamily("iop_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row (0: none)",
                                value=_age_s(oldest, time.time()) if oldest else 0.0)

    def _lag(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily("iop_consumer_lag", "Records on a partition not yet consumed by the group "
                                "(as its worker last measured)", labels=["group", "topic", "partition"])
        for name, value in self.store.values_with_prefix("lag:"):
            group, _, rest = name.removeprefix("lag:").partition(":")
            topic, _, partition = rest.rpartition(":")
            if topic and partition.isdigit():
                lag.add_metric([group, topic, partition], float(value))
        yield lag

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("iop_work_queue_depth", "Items waiting in a work queue (an EHR subscription's "
                                  "deliveries)", labels=["queue"])
        for queue in self.store.queues_due("queued", "9999-12-31T23:59:59Z"):
            depth.add_metric([queue], float(len(self.store.work(queue, ("queued",), BACKLOG_LIMIT))))
        yield depth

    def _handler_errors(self) -> Iterator[Metric]:
        from shared.events.failures import handler_errors

        errors = CounterMetricFamily("iop_handler_errors", "Attempts at an event that failed with a defect of the "
                                     "handler, as the service's consumers counted them", labels=["event_type", "group"])
        for (group, event_type), count in sorted(handler_errors(self.store).items()):
            errors.add_metric([event_type, group], float(count))
        yield errors

    def _subscriptions(self) -> Iterator[Metric]:
        from shared.fhir.search import token_condition

        subs = GaugeMetricFamily("iop_subscriptions", "EHR Subscriptions by status", labels=["status"])
        for status in ("requested", "active", "error", "off"):
            page = self.store.search("Subscription", [token_condition("status", status)], "r.created_seq", 1, 0)
            subs.add_metric([status], float(page.total or 0))
        yield subs
