"""Given the suite started as real processes, every service is up, ready, described and measured."""
from __future__ import annotations

import pytest
import requests

from tests.support.processes import TEST_PORTS, base_url

SERVICES = list(TEST_PORTS)
OWNED = {"intake": {"Patient", "Questionnaire", "QuestionnaireResponse", "Observation", "ServiceRequest", "Flag",
                    "Group"},
         "careplan": {"EpisodeOfCare", "CarePlan", "Goal", "Task"}, "encounters": {"Encounter"},
         "aftercare": {"CarePlan", "Goal", "ServiceRequest", "Consent", "Subscription", "AuditEvent", "Provenance"}}


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_is_ready_with_its_store_and_kafka(suite, service: str) -> None:
    root = f"http://127.0.0.1:{TEST_PORTS[service]}"
    assert requests.get(f"{root}/healthz", timeout=5).json()["status"] == "up"
    ready = requests.get(f"{root}/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"store": "ok", "kafka": "ok"}


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_describes_what_it_serves(suite, service: str) -> None:
    resp = requests.get(f"{base_url(service)}/metadata", timeout=5)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/fhir+json")
    cs = resp.json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    assert {r["type"] for r in cs["rest"][0]["resource"]} == OWNED[service] | {"AuditEvent"}
    assert cs["rest"][0]["security"]["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_exposes_prometheus_metrics(suite, service: str) -> None:
    requests.get(f"{base_url(service)}/metadata", timeout=5)
    text = requests.get(f"http://127.0.0.1:{TEST_PORTS[service]}/metrics", timeout=5).text
    assert "iop_http_requests_total" in text and "iop_outbox_backlog" in text
