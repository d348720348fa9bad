"""Helpers for tests that drive a service's real app through Flask's test client."""
from __future__ import annotations

from tests.integration.test_fhir_conformance import Fhir


def outbox_size(fhir: Fhir) -> int:
    """Events the service has committed to its outbox (none leave it: no relay runs in these tests)."""
    return len(fhir.app.extensions["iop"].store.unsent_events(100000))
