"""Sample resources an EHR integration sends to aftercare, and readers for the notifications it gets.

For integration engineers trying the suite, the demo, the benchmarks and the tests: a 42 CFR Part 2
Consent permitting disclosure to named organisations, and a Backport-IG topic Subscription with a
rest-hook channel (docs/ehr-delivery.md explains each element).
"""
from __future__ import annotations

from typing import Any

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
LOCAL = "https://iop-suite.org/fhir/StructureDefinition"
TOPIC = "https://iop-suite.org/fhir/SubscriptionTopic"


def consent(patient: str, organisations: list[str]) -> dict[str, Any]:
    """The patient permits disclosure of their Part 2 records to `organisations` for treatment."""
    return {"resourceType": "Consent", "status": "active", "dateTime": "2026-01-01",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "64292-6"}]}],
            "patient": {"reference": f"Patient/{patient}"},
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                       "code": "42CFRPart2"}]},
            "provision": {"type": "permit", "period": {"start": "2026-01-01"},
                          "actor": [{"role": {"coding": [{
                              "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                              "code": "IRCP"}]}, "reference": {"reference": org}} for org in organisations],
                          "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction",
                                                  "code": "disclose"}]}],
                          "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                       "code": "TREAT"}]}}


def subscription(topic: str, patient: str, endpoint: str, organisation: str, content: str = "id-only",
                 reason: str = "Care plan updates for our patients", timeout_s: int = 5,
                 secret: str | None = None) -> dict[str, Any]:
    """A rest-hook Subscription to one topic, filtered to one patient, on behalf of `organisation`;
    with `secret`, every notification carries an HMAC-SHA256 signature."""
    channel_ext: list[dict[str, Any]] = [{"url": f"{BACKPORT}/backport-timeout", "valueUnsignedInt": timeout_s}]
    if secret:
        channel_ext.append({"url": f"{LOCAL}/subscription-hmac-secret", "valueString": secret})
    return {"resourceType": "Subscription", "status": "requested", "reason": reason,
            "criteria": f"{TOPIC}/{topic}",
            "_criteria": {"extension": [{"url": f"{BACKPORT}/backport-filter-criteria",
                                         "valueString": f"CarePlan?patient=Patient/{patient}"}]},
            "extension": [{"url": f"{LOCAL}/subscription-recipient", "valueReference": {"reference": organisation}}],
            "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                        "_payload": {"extension": [{"url": f"{BACKPORT}/backport-payload-content",
                                                    "valueCode": content}]},
                        "extension": channel_ext}}


def notification_status(bundle: dict) -> dict[str, Any]:
    """The simple parameters (type, status, topic...) of a notification Bundle's SubscriptionStatus."""
    params = bundle["entry"][0]["resource"]["parameter"]
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in params if "part" not in p}


def event_numbers(bundle: dict) -> list[int]:
    params = bundle["entry"][0]["resource"]["parameter"]
    numbers = []
    for p in params:
        if p["name"] == "notification-event":
            part = next(q for q in p["part"] if q["name"] == "event-number")
            numbers.append(int(next(v for k, v in part.items() if k.startswith("value"))))
    return numbers


def focus_references(bundle: dict) -> list[str]:
    """What each notification-event is about (its focus reference)."""
    refs = []
    for p in bundle["entry"][0]["resource"]["parameter"]:
        if p["name"] == "notification-event":
            refs += [q["valueReference"]["reference"] for q in p["part"] if q["name"] == "focus"]
    return refs
