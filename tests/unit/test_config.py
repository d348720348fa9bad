"""Settings from IOP_* variables: defaults, per-service values, refusals."""
from __future__ import annotations

import pytest

from shared.config import Settings
from shared.events import admin


def test_consumers_check_event_structure_by_default_and_a_full_check_can_be_asked_for(monkeypatch) -> None:
    monkeypatch.delenv("IOP_EVENT_VALIDATION", raising=False)
    assert Settings(service="careplan").event_validation == "structure"
    monkeypatch.setenv("IOP_EVENT_VALIDATION", "full")
    assert Settings(service="careplan").event_validation == "full"


def test_an_unknown_event_validation_is_refused_by_name(monkeypatch) -> None:
    monkeypatch.setenv("IOP_EVENT_VALIDATION", "strict")
    with pytest.raises(ValueError, match="IOP_EVENT_VALIDATION"):
        Settings(service="careplan")


def test_only_aftercare_lingers_by_default_and_each_service_can_be_set(monkeypatch) -> None:
    for service in ("careplan", "encounters", "aftercare"):
        monkeypatch.delenv(f"IOP_{service.upper()}_LINGER_MS", raising=False)
    assert [Settings(service=s).consumer_linger_ms for s in ("careplan", "encounters", "aftercare")] == [0, 0, 20]
    monkeypatch.setenv("IOP_AFTERCARE_LINGER_MS", "0")
    monkeypatch.setenv("IOP_ENCOUNTERS_LINGER_MS", "50")
    assert Settings(service="aftercare").consumer_linger_ms == 0
    assert Settings(service="encounters").consumer_linger_ms == 50


def test_a_moved_port_moves_the_default_base_url(monkeypatch) -> None:
    monkeypatch.delenv("IOP_CAREPLAN_BASE_URL", raising=False)
    monkeypatch.setenv("IOP_CAREPLAN_PORT", "9182")
    settings = Settings(service="careplan")
    assert settings.port == 9182
    assert settings.base_url == "http://127.0.0.1:9182/fhir"


def test_a_base_url_set_by_name_wins_over_the_port(monkeypatch) -> None:
    monkeypatch.setenv("IOP_CAREPLAN_PORT", "9182")
    monkeypatch.setenv("IOP_CAREPLAN_BASE_URL", "https://iop.example.org/careplan/fhir/")
    assert Settings(service="careplan").base_url == "https://iop.example.org/careplan/fhir"


def test_the_local_broker_is_found_on_iop_kafka_port_alone(monkeypatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("IOP_KAFKA_PORT", "29092")
    assert Settings(service="intake").kafka_bootstrap == "127.0.0.1:29092"
    assert admin.bootstrap() == "127.0.0.1:29092"
    monkeypatch.delenv("IOP_KAFKA_PORT")
    assert Settings(service="intake").kafka_bootstrap == "127.0.0.1:9092"


def test_kafka_bootstrap_servers_names_the_cluster_whatever_the_local_port(monkeypatch) -> None:
    monkeypatch.setenv("IOP_KAFKA_PORT", "29092")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1.example.org:9093,kafka-2.example.org:9093")
    assert Settings(service="intake").kafka_bootstrap == "kafka-1.example.org:9093,kafka-2.example.org:9093"
    assert admin.bootstrap() == "kafka-1.example.org:9093,kafka-2.example.org:9093"


def test_commits_are_durable_by_default_and_normal_can_be_chosen(monkeypatch) -> None:
    monkeypatch.delenv("IOP_SQLITE_SYNCHRONOUS", raising=False)
    assert Settings(service="intake").sqlite_synchronous == "FULL"
    monkeypatch.setenv("IOP_SQLITE_SYNCHRONOUS", "normal")
    assert Settings(service="intake").sqlite_synchronous == "NORMAL"


@pytest.mark.parametrize("value", ["OFF", "EXTRA", "0", "fast"])
def test_an_unknown_sqlite_synchronous_is_refused_by_name(monkeypatch, value: str) -> None:
    monkeypatch.setenv("IOP_SQLITE_SYNCHRONOUS", value)
    with pytest.raises(ValueError, match="IOP_SQLITE_SYNCHRONOUS must be one of FULL, NORMAL"):
        Settings(service="intake")


def test_ready_does_not_require_kafka_unless_asked(monkeypatch) -> None:
    monkeypatch.delenv("IOP_READY_REQUIRES_KAFKA", raising=False)
    assert Settings(service="intake").kafka_required is False
    monkeypatch.setenv("IOP_READY_REQUIRES_KAFKA", "1")
    assert Settings(service="intake").kafka_required is True
