"""`iop status`: the operator's view of a running suite, in one screen."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import requests
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from shared.auth import dev_secret, mint
from shared.config import SERVICE_PORTS, Settings
from shared.events import dlq
from shared.events.catalogue import DLQ_SUFFIX, TOPICS

GROUPS = {"careplan": ["iop.intake.events", "iop.encounter.events"], "encounters": ["iop.careplan.events"],
          "aftercare": list(TOPICS)}


@dataclass
class SuiteStatus:
    services: dict[str, str] = field(default_factory=dict)
    broker: str = "unreachable"
    lag: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    dead_letter_kinds: dict[str, dict[str, int]] = field(default_factory=dict)  # DLQ topic -> kind -> count
    handler_errors: dict[tuple[str, str], int] = field(default_factory=dict)  # (group, event type) -> count
    subscriptions_in_error: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _services(status: SuiteStatus) -> None:
    for name in SERVICE_PORTS:
        url = f"http://127.0.0.1:{Settings(name).port}/readyz"
        try:
            resp = requests.get(url, timeout=3)
            checks = resp.json().get("checks", {})
            status.services[name] = "ready" if resp.ok else "not ready (" + ", ".join(
                f"{k} {v}" for k, v in checks.items() if v != "ok") + ")"
        except requests.RequestException:
            status.services[name] = "down"


def _kafka(status: SuiteStatus, servers: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=5000, bootstrap_timeout_ms=5000)
    consumer = KafkaConsumer(bootstrap_servers=servers, group_id=None)
    try:
        status.broker = f"reachable at {servers}"
        partitions = [TopicPartition(t, p) for t in (*TOPICS, *(t + DLQ_SUFFIX for t in TOPICS))
                      for p in consumer.partitions_for_topic(t) or ()]
        ends, starts = consumer.end_offsets(partitions), consumer.beginning_offsets(partitions)
        for topic in TOPICS:
            dlq_partitions = [tp for tp in partitions if tp.topic == topic + DLQ_SUFFIX]
            status.dead_letters[topic + DLQ_SUFFIX] = sum(ends[tp] - starts[tp] for tp in dlq_partitions)
        for service, topics in GROUPS.items():
            group = f"iop-{service}"
            committed = admin.list_group_offsets({group: None}).get(group, {})
            status.lag[group] = sum(max(0, ends[tp] - (committed[tp].offset if tp in committed else starts[tp]))
                                    for tp in partitions if tp.topic in topics)
    finally:
        consumer.close()
        admin.close()


def _dead_letter_kinds(status: SuiteStatus, servers: str) -> None:
    for topic, count in status.dead_letters.items():
        if count:
            status.dead_letter_kinds[topic] = dlq.count_by_kind(servers, topic)


_HANDLER_ERRORS = re.compile(r'^iop_handler_errors_total\{event_type="([^"]*)",group="([^"]*)"\} ([0-9.]+)$', re.M)


def _handler_errors(status: SuiteStatus) -> None:
    """From each service's /metrics: its web process shows what its worker's consumers counted in the store."""
    for name in SERVICE_PORTS:
        try:
            text = requests.get(f"http://127.0.0.1:{Settings(name).port}/metrics", timeout=5).text
        except requests.RequestException:
            continue  # shown as down above
        for event_type, group, count in _HANDLER_ERRORS.findall(text):
            status.handler_errors[(group, event_type)] = int(float(count))


def _subscriptions(status: SuiteStatus, settings: Settings) -> None:
    secret = settings.auth_hs256_secret or dev_secret(settings.var_dir)
    token = mint(secret, "system/Subscription.rs", settings.auth_issuer, settings.auth_audience, "iop-status")
    url = f"http://127.0.0.1:{Settings('aftercare').port}/fhir/Subscription"
    resp = requests.get(url, params={"status": "error"}, headers={"Authorization": f"Bearer {token}"}, timeout=5)
    resp.raise_for_status()
    status.subscriptions_in_error = [e["resource"]["id"] for e in resp.json().get("entry", [])]


def collect() -> SuiteStatus:
    settings = Settings("cli")
    status = SuiteStatus()
    _services(status)
    for what, step in (("kafka", lambda: _kafka(status, settings.kafka_bootstrap)),
                       ("dead letters", lambda: _dead_letter_kinds(status, settings.kafka_bootstrap)),
                       ("handler errors", lambda: _handler_errors(status)),
                       ("subscriptions", lambda: _subscriptions(status, settings))):
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - report what could not be read and go on
            status.problems.append(f"{what}: {type(exc).__name__}")
    return status


def render(status: SuiteStatus) -> str:
    lines = ["services:"] + [f"  {name:<11} {state}" for name, state in status.services.items()]
    lines += [f"broker:      {status.broker}", "consumer lag:"]
    lines += [f"  {group:<16} {lag}" for group, lag in status.lag.items()]
    lines += ["dead letters:"] + [f"  {topic:<26} {n}{_by_kind(status.dead_letter_kinds.get(topic))}"
                                  for topic, n in status.dead_letters.items()]
    lines += ["handler errors (failed attempts, see the worker logs):"]
    lines += [f"  {group:<16} {event_type:<28} {n}" for (group, event_type), n in sorted(status.handler_errors.items())]
    lines += ["  none"] if not status.handler_errors else []
    lines.append("EHR subscriptions in error: " + (", ".join(status.subscriptions_in_error) or "none"))
    lines += [f"could not read {p}" for p in status.problems]
    return "\n".join(lines)


def _by_kind(kinds: dict[str, int] | None) -> str:
    return "  (" + ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())) + ")" if kinds else ""


def healthy(status: SuiteStatus) -> bool:
    return all(s == "ready" for s in status.services.values()) and not status.problems \
        and not status.subscriptions_in_error
