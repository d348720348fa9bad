"""`iop status`: the operator's view of a running suite, in one screen: every replica under supervisord (its
state, a web replica's readiness and HAProxy's view of it, a worker's membership of its consumer group and the lag
of the partitions it holds), the broker, lag, dead letters, handler errors and EHR subscriptions in error."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import requests
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from shared import topology
from shared.auth import dev_secret, mint
from shared.config import SERVICE_PORTS, Settings
from shared.events import dlq
from shared.events.catalogue import DLQ_SUFFIX, TOPICS

GROUPS = {"careplan": ["iop.intake.events", "iop.encounter.events"], "encounters": ["iop.careplan.events"],
          "aftercare": list(TOPICS)}


@dataclass
class Member:
    """One member of a consumer group: who (its static instance id, else its client id), what it holds."""

    group: str
    name: str
    host: str
    partitions: list[TopicPartition] = field(default_factory=list)
    lag: int = 0


@dataclass
class Replica:
    """One supervised process as supervisord, its own /readyz, HAProxy and its consumer group see it."""

    name: str
    kind: str
    state: str  # supervisord's: RUNNING, STARTING, BACKOFF, EXITED, FATAL ...
    pid: int | None
    ready: str = ""  # web: ready / not ready (...) / no answer
    balancer: str = ""  # web in the cluster: HAProxy's UP / DOWN
    membership: str = ""  # worker: its consumer group membership and lag

    @property
    def healthy(self) -> bool:
        return self.state == "RUNNING" and (self.kind != "web" or self.ready.startswith("ready")) \
            and (not self.balancer or self.balancer == "UP") and not self.membership.startswith("not a member")


@dataclass
class SuiteStatus:
    topology: str = ""  # embedded / cluster while supervisord runs the suite for this var dir
    replicas: list[Replica] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
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
        lags: dict[TopicPartition, int] = {}
        for service, topics in GROUPS.items():
            group = f"iop-{service}"
            committed = admin.list_group_offsets({group: None}).get(group, {})
            for tp in partitions:
                if tp.topic in topics:
                    lags[tp] = max(0, ends[tp] - (committed[tp].offset if tp in committed else starts[tp]))
            status.lag[group] = sum(lags[tp] for tp in partitions if tp.topic in topics)
            for member in _members(admin, group):
                member.lag = sum(lags.get(tp, 0) for tp in member.partitions)
                status.members.append(member)
    finally:
        consumer.close()
        admin.close()


def _members(admin: KafkaAdminClient, group: str) -> list[Member]:
    """The group's members as its coordinator describes them (a group nobody joined yet has none)."""
    try:
        described = admin.describe_groups([group]).get(group, {})
    except KafkaError:
        return []
    members = []
    for m in described.get("members") or []:
        assignment = m.get("member_assignment")
        held = [TopicPartition(a["topic"], p) for a in (assignment or {}).get("assigned_partitions") or []
                for p in a["partitions"]] if isinstance(assignment, dict) else []
        name = m.get("group_instance_id") or m.get("client_id") or m.get("member_id") or "?"
        members.append(Member(group, name, (m.get("client_host") or "").lstrip("/"), sorted(held)))
    return members


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


def _replicas(status: SuiteStatus, var_dir: Path) -> None:
    """Every process supervisord runs for this var dir, and each web replica's own answer to /readyz."""
    top = topology.Topology.load(var_dir)
    info = topology.process_info(var_dir)
    if top is None or not info:
        return
    status.topology = top.name
    balancer = topology.haproxy_servers(var_dir) if top.name == "cluster" else {}
    for proc in top.processes():
        state = info.get(proc.name, {})
        replica = Replica(proc.name, proc.kind, state.get("statename", "UNKNOWN"), state.get("pid") or None)
        if proc.kind == "web":
            replica.ready = topology.readiness(proc.port or 0)[1] + f"  http://127.0.0.1:{proc.port}"
            if top.name == "cluster":
                replica.balancer = balancer.get(proc.name, "unknown")
        status.replicas.append(replica)


def _memberships(status: SuiteStatus) -> None:
    """Which worker replica is a member of its service's group, by the static instance id IOP_REPLICA gives it."""
    for replica in status.replicas:
        if replica.kind != "worker":
            continue
        service = replica.name.split("-worker-")[0]
        if service not in GROUPS:
            replica.membership = "relay only (no consumer group)"
            continue
        group = f"iop-{service}"
        members = [m for m in status.members if m.group == group]
        mine = [m for m in members if m.name == replica.name or m.name.endswith("-" + replica.name)]
        if mine:
            replica.membership = f"{group}: {len(mine[0].partitions)} partitions, lag {mine[0].lag}"
        elif members and not any("-worker-" in m.name for m in members):  # dynamic members, no IOP_REPLICA
            replica.membership = f"{group}: one of {len(members)} members (no member names its replica)"
        elif status.broker.startswith("reachable"):
            replica.membership = f"not a member of {group}"


def _bootstrap(settings: Settings) -> str:
    """Where the running suite's processes find Kafka: what `make run`/`make run-cluster` gave them, unless the
    caller names a cluster."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return settings.kafka_bootstrap
    return topology.saved_state(settings.var_dir).get("kafka_bootstrap") or settings.kafka_bootstrap


def collect() -> SuiteStatus:
    settings = Settings("cli")
    status = SuiteStatus()
    servers = _bootstrap(settings)
    _services(status)
    for what, step in (("processes", lambda: _replicas(status, settings.var_dir)),
                       ("kafka", lambda: _kafka(status, servers)),
                       ("dead letters", lambda: _dead_letter_kinds(status, servers)),
                       ("handler errors", lambda: _handler_errors(status)),
                       ("subscriptions", lambda: _subscriptions(status, settings))):
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - report what could not be read and go on
            status.problems.append(f"{what}: {type(exc).__name__}")
    _memberships(status)
    return status


def render(status: SuiteStatus) -> str:
    if status.topology:
        lines = [f"processes ({status.topology} topology, under supervisord):"]
        for r in status.replicas:
            detail = "  ".join(x for x in (r.ready, f"haproxy {r.balancer}" if r.balancer else "", r.membership) if x)
            lines.append(f"  {r.name:<20} {r.state:<9} {'pid ' + str(r.pid) if r.pid else '-':<10} {detail}".rstrip())
    else:
        lines = ["processes: none under supervisord for this var dir"]
    lines += ["services:"] + [f"  {name:<11} {state}" for name, state in status.services.items()]
    lines += [f"broker:      {status.broker}", "consumer lag:"]
    lines += [f"  {group:<16} {lag}" for group, lag in status.lag.items()]
    lines += ["consumer group members:"] + [
        f"  {m.group:<16} {m.name:<24} {len(m.partitions)} partitions  lag {m.lag}  {m.host}".rstrip()
        for m in status.members]
    lines += ["  none"] if not status.members else []
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
        and not status.subscriptions_in_error and all(r.healthy for r in status.replicas)
