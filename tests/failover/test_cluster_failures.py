"""The suite on a 3-node cluster (RF 3, min ISR 2) loses nothing when one part dies mid-stream.

While 300 partner intakes stream in: SIGKILL the broker leading a busy partition, or one of two careplan workers.
Then every accepted intake has exactly one plan (none lost, none doubled), intake never answered 5xx, every event
a service committed is on its topic, and per patient in the order it was committed (read from the outside).
The figures (lost, doubled, 5xx, recovery times) are printed and kept in failover-figures.json under the tests' var dir.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from bench.load import IntakeLoad, Submission, bodies
from shared.events.catalogue import AFTERCARE, CAREPLAN, ENCOUNTER, INTAKE, PARTITIONS, TOPICS
from shared.events.relay import LEASE
from shared.fhir.store import open_store
from shared.replicas import holder_pid
from shared.status import GROUPS
from tests.failover.conftest import CAREPLAN_REPLICAS, PORTS, ClusterSuite
from tests.support.auth import bearer, http
from tests.support.broker import Cluster
from tests.support.failure_watch import FailureWatch
from tests.support.scripts import TEST_VAR
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.kafka_cluster]
INTAKES = 300
RATE = 20  # intakes per second: the stream lasts 15 s, the failure comes a third of the way in
FAIL_AFTER = 100
OWN_TOPIC = {service: topic for service, topic in (("intake", INTAKE), ("careplan", CAREPLAN),
                                                    ("encounters", ENCOUNTER), ("aftercare", AFTERCARE))
             if service in PORTS}
FIGURES = TEST_VAR / "failover-figures.json"


class PlanWatch:
    """An outside consumer of the careplan topic: when each patient's first plan event arrived, and how many."""

    def __init__(self, bootstrap: str) -> None:
        self.first: dict[str, float] = {}
        self.ce_ids: dict[str, set[str]] = defaultdict(set)
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                       fetch_max_wait_ms=50)
        partitions = [TopicPartition(CAREPLAN, p) for p in self._consumer.partitions_for_topic(CAREPLAN)]
        self._consumer.assign(partitions)
        self._consumer.seek_to_end(*partitions)
        for tp in partitions:
            self._consumer.position(tp)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for records in self._consumer.poll(timeout_ms=100).values():
                now = time.perf_counter()
                for r in records:
                    headers = {k: v.decode() for k, v in r.headers or []}
                    if headers.get("ce_type") != "iop.careplan.created":
                        continue
                    key = (r.key or b"").decode()
                    with self._lock:
                        self.first.setdefault(key, now)
                        self.ce_ids[key].add(headers["ce_id"])

    def planned(self, patients: set[str]) -> int:
        with self._lock:
            return len(patients & set(self.first))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


@pytest.fixture
def plans(cluster_suite: ClusterSuite) -> Iterator[PlanWatch]:
    watch = PlanWatch(cluster_suite.cluster.bootstrap)
    yield watch
    watch.close()


def topic_ends(bootstrap: str) -> dict[TopicPartition, int]:
    with closing(KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)) as consumer:
        partitions = [TopicPartition(t, p) for t in OWN_TOPIC.values() for p in consumer.partitions_for_topic(t)]
        return consumer.end_offsets(partitions)


def read_topics(bootstrap: str, starts: dict[TopicPartition, int]) -> dict[str, list[tuple[int, str, str]]]:
    """Every record written to the contract topics since `starts`: per topic, (partition, key, ce_id) in log order."""
    with closing(KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)) as consumer:
        ends = consumer.end_offsets(list(starts))
        consumer.assign(list(starts))
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        got: dict[TopicPartition, list] = defaultdict(list)
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in starts) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                got[tp] += [r for r in records if r.offset < ends[tp]]
        assert all(consumer.position(tp) >= ends[tp] for tp in starts), "the topics could not be read to their end"
    out: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for tp in sorted(got, key=lambda tp: (tp.topic, tp.partition)):
        for r in sorted(got[tp], key=lambda r: r.offset):
            out[tp.topic].append((tp.partition, r.key.decode(), dict(r.headers)["ce_id"].decode()))
    return out


def last_seq(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0]


def committed(db: Path, after: int) -> list[tuple[str, str, str]]:
    """The outbox rows a service committed after seq `after`: (topic, key, ce_id) in commit order."""
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT topic, key, headers FROM outbox WHERE seq > ? ORDER BY seq", (after,)).fetchall()
    return [(topic, key, dict(json.loads(headers))["ce_id"]) for topic, key, headers in rows]


def unsent(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0]


def group_lag(bootstrap: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, bootstrap_timeout_ms=10000)
    try:
        with closing(KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)) as probe:
            lag = 0
            for service, topics in GROUPS.items():
                if service not in PORTS:
                    continue
                offsets = admin.list_group_offsets({f"iop-{service}": None}).get(f"iop-{service}", {})
                partitions = [TopicPartition(t, p) for t in topics for p in probe.partitions_for_topic(t)]
                for tp, end in probe.end_offsets(partitions).items():
                    lag += max(0, end - (offsets[tp].offset if tp in offsets else 0))
            return lag
    finally:
        admin.close()


class Run:
    """One test's stream: where every topic and outbox stood before it, the intakes and their answers."""

    def __init__(self, suite: ClusterSuite) -> None:
        self.suite = suite
        # What an earlier test left unsent is published first: it is not this test's to judge.
        wait_until(lambda: all(unsent(suite.db(s)) == 0 for s in OWN_TOPIC), 300, 0.5, "earlier outboxes sent")
        self.starts = topic_ends(suite.cluster.bootstrap)
        self.seqs = {service: last_seq(suite.db(service)) for service in OWN_TOPIC}
        self.subs: list[Submission] = []
        self.load = IntakeLoad(suite.url("intake"), bearer(), clients=8, timeout_s=30)
        self._thread = threading.Thread(target=self.load.run, args=(RATE, bodies(INTAKES), self.subs), daemon=True)
        self._thread.start()

    def accepted(self) -> set[str]:
        return {s.patient for s in list(self.subs) if s.accepted}

    def finish(self) -> None:
        self._thread.join(INTAKES / RATE + 60)
        assert not self._thread.is_alive(), "the intake stream did not end"
        wait_until(lambda: all(s.finished for s in self.subs), 60, 0.1, "every intake answered")

    def settle(self, plans: PlanWatch) -> None:
        """Every accepted intake planned, every outbox sent, every consumer group at the end of its topics."""
        patients = self.accepted()
        wait_until(lambda: plans.planned(patients) == len(patients), 180, 0.2, "a plan for every accepted intake")
        bootstrap = self.suite.cluster.bootstrap

        def idle() -> bool:
            return all(unsent(self.suite.db(s)) == 0 for s in OWN_TOPIC) and group_lag(bootstrap) == 0

        wait_until(lambda: idle() and idle(), 180, 0.5, "outboxes sent and consumers caught up")

    def figures(self) -> dict[str, int]:
        """Lost and doubled plans (by the careplan API), 5xx and unanswered intakes."""
        patients = sorted(self.accepted())

        def plans_of(patient: str) -> int:
            resp = http.get(f"{self.suite.url('careplan')}/CarePlan", params={"patient": patient}, timeout=30)
            assert resp.status_code == 200, resp.text
            return resp.json()["total"]

        with ThreadPoolExecutor(8) as pool:
            counts = list(pool.map(plans_of, patients))
        return {"intakes": len(self.subs), "accepted": len(patients),
                "http_5xx": sum(s.status >= 500 for s in self.subs),
                "unanswered": sum(s.status == 0 for s in self.subs),
                "plans_lost": sum(n == 0 for n in counts), "plans_doubled": sum(n > 1 for n in counts)}

    def topic_figures(self) -> dict[str, int]:
        """Each service's committed events against its topic, read from the outside, per patient in commit order."""
        seen = read_topics(self.suite.cluster.bootstrap, self.starts)
        out = {"events_committed": 0, "events_lost": 0, "patients_out_of_order": 0, "records_redelivered": 0}
        for service, topic in OWN_TOPIC.items():
            expected: dict[str, list[str]] = defaultdict(list)
            for t, key, ce_id in committed(self.suite.db(service), self.seqs[service]):
                assert t == topic, f"{service} committed an event for {t}"
                expected[key].append(ce_id)
            on_topic: dict[str, list[str]] = defaultdict(list)
            partitions: dict[str, set[int]] = defaultdict(set)
            for partition, key, ce_id in seen[topic]:
                partitions[key].add(partition)
                if ce_id not in on_topic[key]:
                    on_topic[key].append(ce_id)  # first appearance: a resend of a record already there is no reorder
                else:
                    out["records_redelivered"] += 1
            assert all(len(p) == 1 for p in partitions.values()), f"a patient's events on {topic} span partitions"
            assert set(on_topic) <= set(expected), f"{topic} has events {service} did not commit in this test"
            for key, ce_ids in expected.items():
                out["events_committed"] += len(ce_ids)
                out["events_lost"] += len(set(ce_ids) - set(on_topic[key]))
                out["patients_out_of_order"] += on_topic[key] != [c for c in ce_ids if c in on_topic[key]]
        return out


def record(name: str, figures: dict) -> None:
    print(f"\n{name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    saved[name] = figures
    FIGURES.write_text(json.dumps(saved, indent=2) + "\n")


def stall_after(plans: PlanWatch, at: float, patients: set[str]) -> float:
    """The longest wait for the next new plan from `at` on: how long the pipeline stood still after the failure."""
    with plans._lock:
        times = sorted(t for key, t in plans.first.items() if key in patients and t >= at)
    return round(max(b - a for a, b in zip([at, *times], times, strict=False)), 2) if times else -1.0


def test_the_leader_broker_of_a_busy_partition_killed_mid_stream_loses_no_plan_and_doubles_none(
        cluster_suite: ClusterSuite, plans: PlanWatch, cluster_failures: FailureWatch) -> None:
    cluster, figures = cluster_suite.cluster, {}
    fully_replicated(cluster)
    run = Run(cluster_suite)
    wait_until(lambda: plans.planned(run.accepted()) >= FAIL_AFTER, 300, 0.05, f"{FAIL_AFTER} plans")
    fully_replicated(cluster)  # one node's loss leaves every partition 2 in-sync copies: min.insync.replicas
    victim = cluster.leaders([INTAKE])[INTAKE, 0]
    killed_at = time.perf_counter()
    cluster.kill(victim)
    try:
        wait_until(lambda: not led_by(cluster, victim), 60, 0.2, f"every partition led by a node other than {victim}")
        moved_s = time.perf_counter() - killed_at
        run.finish()
        run.settle(plans)
        figures.update({"killed_node": victim, **run.figures(), **run.topic_figures(),
                        "leaders_moved_s": round(moved_s, 2),
                        "plan_stall_s": stall_after(plans, killed_at, run.accepted())})
    finally:
        restarted_at = time.perf_counter()
        cluster.start()  # the dead node again; it catches up from the others
        fully_replicated(cluster)
    figures["isr_restored_s"] = round(time.perf_counter() - restarted_at, 2)
    record("broker_leader_killed", figures)
    assert figures["accepted"] == figures["intakes"] == INTAKES
    assert figures["http_5xx"] == figures["unanswered"] == 0
    assert figures["plans_lost"] == figures["plans_doubled"] == 0
    assert figures["events_lost"] == figures["patients_out_of_order"] == 0
    assert all(len(plans.ce_ids[p]) == 1 for p in run.accepted()), "a patient got two plan events"


def fully_replicated(cluster: Cluster) -> None:
    """Every partition of the contract topics with its 3 copies in sync (a fresh or restarted node catches up)."""
    wait_until(lambda: all(len(isr) == 3 for isr in cluster.in_sync(list(TOPICS)).values()), 180, 0.5,
               "every partition with 3 in-sync replicas")


def led_by(cluster: Cluster, node: int) -> bool:
    """Whether any partition of the contract topics is still led by `node`, or by no one (or no answer yet)."""
    try:
        return any(leader in (node, -1) for leader in cluster.leaders(list(TOPICS)).values())
    except KafkaError:
        return True


def relay_holder(suite: ClusterSuite) -> str | None:
    """The careplan worker holding the outbox relay's lease (`lease` table), if the store says so."""
    store = open_store(suite.db("careplan"))
    try:
        lease = store.lease(LEASE)
    finally:
        store.close()
    if lease is None or lease[2] < time.time():
        return None
    pids = {p.popen.pid: name for name, p in suite.procs.items() if p.popen is not None and p.alive}
    return pids.get(holder_pid(lease[0]))


def members(bootstrap: str, group: str) -> dict[str, int]:
    """The group's members by replica name, with how many partitions each holds."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, bootstrap_timeout_ms=10000)
        try:
            info = admin.describe_groups([group])[group]
        finally:
            admin.close()
    except KafkaError:
        return {}  # the coordinator busy with the rebalance: asked again
    return {m.get("group_instance_id") or m["client_id"]:
            sum(len(a["partitions"]) for a in (m.get("member_assignment") or {}).get("assigned_partitions", []))
            for m in info.get("members", [])}


def test_one_of_two_careplan_workers_killed_mid_stream_hands_its_partitions_and_the_relay_to_the_other(
        cluster_suite: ClusterSuite, plans: PlanWatch, cluster_failures: FailureWatch) -> None:
    bootstrap = cluster_suite.cluster.bootstrap
    fully_replicated(cluster_suite.cluster)
    partitions = PARTITIONS * len(GROUPS["careplan"])
    wait_until(lambda: sorted(members(bootstrap, "iop-careplan")) == sorted(CAREPLAN_REPLICAS)
               and min(members(bootstrap, "iop-careplan").values()) > 0, 90, 0.5,
               "both careplan workers consuming")
    run = Run(cluster_suite)
    wait_until(lambda: plans.planned(run.accepted()) >= FAIL_AFTER, 300, 0.05, f"{FAIL_AFTER} plans")
    holder = wait_until(lambda: relay_holder(cluster_suite), 30, 0.1, "the relay's holder")
    victim = holder  # the one with the relay, so that both its partitions and the relay must move
    survivor = next(r for r in CAREPLAN_REPLICAS if r != victim)
    killed_at = time.perf_counter()
    cluster_suite.procs[victim].kill()
    try:
        wait_until(lambda: members(bootstrap, "iop-careplan") == {survivor: partitions}, 90, 0.2,
                   f"{survivor} holding all {partitions} partitions")
        partitions_moved_s = time.perf_counter() - killed_at
        wait_until(lambda: relay_holder(cluster_suite) == survivor, 60, 0.1, f"{survivor} holding the relay")
        relay_moved_s = time.perf_counter() - killed_at
        run.finish()
        run.settle(plans)
        figures = {"killed_worker": victim, **run.figures(), **run.topic_figures(),
                   "partitions_moved_s": round(partitions_moved_s, 2), "relay_moved_s": round(relay_moved_s, 2),
                   "plan_stall_s": stall_after(plans, killed_at, run.accepted())}
    finally:
        cluster_suite.start_worker(victim, "careplan", victim)
    record("careplan_worker_killed", figures)
    assert figures["accepted"] == figures["intakes"] == INTAKES
    assert figures["http_5xx"] == figures["unanswered"] == 0
    assert figures["plans_lost"] == figures["plans_doubled"] == 0
    assert figures["events_lost"] == figures["patients_out_of_order"] == 0
    assert all(len(plans.ce_ids[p]) == 1 for p in run.accepted()), "a patient got two plan events"
