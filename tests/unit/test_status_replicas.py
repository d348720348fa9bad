"""`iop status` tells each replica's part: its supervisor state, its readiness, its consumer-group membership."""
from __future__ import annotations

from kafka import TopicPartition

from shared.status import Member, Replica, SuiteStatus, _memberships, healthy, render


def held(topic: str, *partitions: int) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in partitions]


def cluster(members: list[Member]) -> SuiteStatus:
    status = SuiteStatus(topology="cluster", broker="reachable at 127.0.0.1:19092", members=members,
                         services={"careplan": "ready"})
    status.replicas = [Replica("careplan-web-1", "web", "RUNNING", 11, "ready  http://127.0.0.1:8111", "UP"),
                       Replica("careplan-worker-1", "worker", "RUNNING", 12),
                       Replica("careplan-worker-2", "worker", "RUNNING", 13),
                       Replica("intake-worker-1", "worker", "RUNNING", 14)]
    return status


def test_each_worker_replica_shows_the_partitions_it_holds_and_their_lag() -> None:
    status = cluster([Member("iop-careplan", "careplan-worker-1", "127.0.0.1", held("iop.intake.events", 0, 1, 2), 4),
                      Member("iop-careplan", "careplan-worker-2", "127.0.0.1", held("iop.intake.events", 3, 4, 5))])
    _memberships(status)
    shown = {r.name: r.membership for r in status.replicas}
    assert shown == {"careplan-web-1": "", "careplan-worker-1": "iop-careplan: 3 partitions, lag 4",
                     "careplan-worker-2": "iop-careplan: 3 partitions, lag 0",
                     "intake-worker-1": "relay only (no consumer group)"}
    assert healthy(status)
    text = render(status)
    assert "processes (cluster topology, under supervisord):" in text
    assert "  careplan-web-1       RUNNING   pid 11     ready  http://127.0.0.1:8111  haproxy UP" in text
    assert "  iop-careplan     careplan-worker-1        3 partitions  lag 4  127.0.0.1" in text


def test_a_worker_replica_missing_from_its_group_is_unhealthy() -> None:
    status = cluster([Member("iop-careplan", "careplan-worker-2", "127.0.0.1", held("iop.intake.events", *range(6)))])
    _memberships(status)
    assert status.replicas[1].membership == "not a member of iop-careplan"
    assert not healthy(status)


def test_members_that_name_no_replica_are_counted_not_matched() -> None:
    status = cluster([Member("iop-careplan", "iop-careplan-consumer", "127.0.0.1", held("iop.intake.events", 0)),
                      Member("iop-careplan", "iop-careplan-consumer", "127.0.0.1", held("iop.intake.events", 1))])
    _memberships(status)
    assert status.replicas[1].membership == "iop-careplan: one of 2 members (no member names its replica)"
    assert healthy(status)


def test_a_replica_down_or_out_of_the_balancer_is_unhealthy() -> None:
    for replica in (Replica("careplan-web-1", "web", "BACKOFF", None, "no answer  http://127.0.0.1:8111", "DOWN"),
                    Replica("careplan-web-1", "web", "RUNNING", 11, "ready  http://127.0.0.1:8111", "DOWN"),
                    Replica("careplan-worker-1", "worker", "FATAL", None)):
        assert not replica.healthy
    assert "processes: none under supervisord for this var dir" in render(SuiteStatus())
