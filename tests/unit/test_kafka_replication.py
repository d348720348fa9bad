"""Topics are created with the replication factor and min.insync.replicas that the environment names; consumers
join their group as the replica the environment names."""
from __future__ import annotations

import os
import socket

import pytest
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor

from shared.events import admin, kafka


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IOP_KAFKA_REPLICATION_FACTOR", "IOP_KAFKA_MIN_INSYNC_REPLICAS"):
        monkeypatch.delenv(name, raising=False)


def test_one_copy_and_one_in_sync_replica_on_a_single_broker_by_default() -> None:
    rf = admin.replication_factor()
    assert (rf, admin.min_insync_replicas(rf)) == (1, 1)


@pytest.mark.parametrize(("rf", "isr"), [("2", 1), ("3", 2), ("5", 2)])
def test_two_in_sync_replicas_by_default_from_three_copies_on(monkeypatch: pytest.MonkeyPatch, rf: str,
                                                              isr: int) -> None:
    monkeypatch.setenv("IOP_KAFKA_REPLICATION_FACTOR", rf)
    assert admin.min_insync_replicas(admin.replication_factor()) == isr


def test_min_insync_replicas_is_taken_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOP_KAFKA_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("IOP_KAFKA_MIN_INSYNC_REPLICAS", "3")
    assert admin.min_insync_replicas(admin.replication_factor()) == 3


@pytest.mark.parametrize(("rf", "isr", "wrong"), [("0", "", "REPLICATION_FACTOR"), ("3", "4", "MIN_INSYNC"),
                                                   ("1", "0", "MIN_INSYNC")])
def test_impossible_settings_are_refused_by_name(monkeypatch: pytest.MonkeyPatch, rf: str, isr: str,
                                                 wrong: str) -> None:
    monkeypatch.setenv("IOP_KAFKA_REPLICATION_FACTOR", rf)
    monkeypatch.setenv("IOP_KAFKA_MIN_INSYNC_REPLICAS", isr)
    with pytest.raises(ValueError, match=f"IOP_KAFKA_{wrong}"):
        admin.min_insync_replicas(admin.replication_factor())


def test_the_topics_command_refuses_an_impossible_setting(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("IOP_KAFKA_REPLICATION_FACTOR", "0")
    assert admin.main(["topics"]) == 1
    assert "IOP_KAFKA_REPLICATION_FACTOR" in capsys.readouterr().err


def test_a_consumer_without_a_replica_name_is_a_dynamic_member_with_a_client_id_of_its_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IOP_REPLICA", raising=False)
    monkeypatch.delenv("IOP_KAFKA_SESSION_TIMEOUT_MS", raising=False)
    m = kafka.membership("iop-careplan")
    assert m["group_instance_id"] is None
    assert m["client_id"] == f"iop-careplan-{socket.gethostname()}-{os.getpid()}"
    assert (m["session_timeout_ms"], m["heartbeat_interval_ms"]) == (10000, 2500)
    assert m["partition_assignment_strategy"] == [CooperativeStickyAssignor]


def test_a_named_replica_is_the_static_member_of_that_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOP_REPLICA", "careplan-worker-2")
    monkeypatch.setenv("IOP_KAFKA_SESSION_TIMEOUT_MS", "30000")
    m = kafka.membership("iop-careplan")
    assert (m["group_instance_id"], m["client_id"]) == ("careplan-worker-2", "iop-careplan-careplan-worker-2")
    assert (m["session_timeout_ms"], m["heartbeat_interval_ms"]) == (30000, 7500)
