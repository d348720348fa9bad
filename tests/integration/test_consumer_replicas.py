"""Replicas of one worker in one consumer group, against the real broker: cooperative-sticky assignment moves
only the partitions a joining or leaving replica must take or give up, and a static member (IOP_REPLICA) that
comes back within its session timeout gets its own partitions again without disturbing the others."""
from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition

from shared.events import kafka
from shared.events.admin import create_topics
from tests.support.broker import Broker
from tests.support.waiting import wait_until

PARTITIONS = 6
SESSION_MS = 6000  # the broker's smallest allowed session timeout: a static member that left is out after this


@dataclass
class Member(ConsumerRebalanceListener):
    """One replica, polling in its own thread; what its group gave it and took from it, in order."""

    consumer: KafkaConsumer
    topic: str
    assigned: list[set[TopicPartition]] = field(default_factory=list)
    revoked: list[set[TopicPartition]] = field(default_factory=list)
    lost: list[set[TopicPartition]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def on_partitions_assigned(self, assigned) -> None:
        if assigned:
            self.assigned.append(set(assigned))

    def on_partitions_revoked(self, revoked) -> None:
        if revoked:
            self.revoked.append(set(revoked))

    def on_partitions_lost(self, lost) -> None:
        self.lost.append(set(lost))

    def start(self) -> Member:
        self.consumer.subscribe([self.topic], listener=self)
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self) -> None:
        while not self.stop.is_set():
            self.consumer.poll(timeout_ms=100)

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(10)
        self.consumer.close()

    def partitions(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment()}

    def ever_revoked(self) -> set[int]:
        return {tp.partition for part in self.revoked for tp in part}


@pytest.fixture
def topic(broker: Broker) -> str:
    name = f"test.replicas.{uuid.uuid4().hex[:8]}"
    create_topics(broker.bootstrap, (name,), PARTITIONS)
    return name


@pytest.fixture
def replicas(broker: Broker, topic: str, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    group = f"test-replicas-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("IOP_KAFKA_SESSION_TIMEOUT_MS", str(SESSION_MS))
    members: list[Member] = []

    def join(replica: str | None) -> Member:
        if replica is None:
            monkeypatch.delenv("IOP_REPLICA", raising=False)
        else:
            monkeypatch.setenv("IOP_REPLICA", replica)
        members.append(Member(kafka.consumer(broker.bootstrap, group, [topic]), topic).start())
        return members[-1]

    yield join
    for m in members:
        if not m.stop.is_set():
            m.close()


def settled(*members: Member) -> bool:
    """Every partition owned by exactly one of the members."""
    owned = [m.partitions() for m in members]
    return sum(map(len, owned)) == PARTITIONS and set().union(*owned) == set(range(PARTITIONS))


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_a_replica_joining_takes_only_its_share_and_leaving_gives_back_only_its_own(replicas, static: bool) -> None:
    a = replicas("careplan-worker-1" if static else None)
    wait_until(lambda: a.partitions() == set(range(PARTITIONS)), 60, 0.1, "the first replica owning all")

    b = replicas("careplan-worker-2" if static else None)
    wait_until(lambda: b.partitions() and settled(a, b), 60, 0.1, "the partitions shared by two replicas")
    kept, moved = a.partitions(), b.partitions()
    assert len(kept) == len(moved) == PARTITIONS // 2
    # Cooperative: the first replica gave up exactly what the second took, and never stopped owning the rest.
    assert a.ever_revoked() == moved
    assert all(not ({tp.partition for tp in part} & kept) for part in a.revoked)
    assert [{tp.partition for tp in part} for part in b.assigned] == [moved]

    b.close()  # a static member does not leave: the group hands its partitions on after its session timeout
    wait_until(lambda: a.partitions() == set(range(PARTITIONS)), 60, 0.1, "the partitions back with the first")
    assert a.ever_revoked() == moved, "the remaining replica kept its own partitions while it took the others"
    assert a.lost == [] and b.lost == []


def test_a_static_replica_restarted_within_its_session_gets_its_partitions_back_and_the_others_are_not_disturbed(
        replicas) -> None:
    a = replicas("careplan-worker-1")
    wait_until(lambda: a.partitions() == set(range(PARTITIONS)), 60, 0.1, "the first replica owning all")
    b = replicas("careplan-worker-2")
    wait_until(lambda: b.partitions() and settled(a, b), 60, 0.1, "the partitions shared by two replicas")
    before = (a.partitions(), b.partitions(), len(a.revoked), len(a.assigned))

    b.close()
    again = replicas("careplan-worker-2")  # the same replica name, as a restarted process has
    wait_until(lambda: again.partitions(), 60, 0.1, "the restarted replica's partitions")
    assert again.partitions() == before[1]
    assert (a.partitions(), len(a.revoked), len(a.assigned)) == (before[0], before[2], before[3])
