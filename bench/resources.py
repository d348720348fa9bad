"""What the demo and the benchmarks send besides the samples the services provide."""
from __future__ import annotations

from services.aftercare.samples import consent, event_numbers, focus_references, notification_status, subscription

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
NO_SHOW = {"url": "http://hl7.org/fhir/StructureDefinition/encounter-reasonCancelled",
           "valueCodeableConcept": {"coding": [{"system": "https://iop-suite.org/fhir/CodeSystem/"
                                                "session-cancellation-reason", "code": "no-show"}]}}

__all__ = ["FHIR_JSON", "NO_SHOW", "consent", "event_numbers", "focus_references", "notification_status",
           "subscription"]
