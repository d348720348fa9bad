"""Backport IG 1.1.0 R4 notification Bundles (type history, a backport-subscription-status-r4 Parameters first),
the $status answer, and the HMAC signature of what is posted.

Every event-notification and query-event Bundle is a Part 2 disclosure: it carries the Part 2 labels and
the 42 CFR 2.32 notice as a DS4P display mark (meta.extension), on the Bundle and on each resource in it,
so the notice stays with a resource that a receiver files on its own.
"""
from __future__ import annotations

import copy
import hashlib
import hmac
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from services.aftercare import consent
from services.aftercare.subscriptions import SubscriptionSpec
from shared import codes
from shared.fhir.util import now_instant

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
STATUS_PROFILE = f"{BACKPORT}/backport-subscription-status-r4"
NOTIFICATION_PROFILE = f"{BACKPORT}/backport-subscription-notification-r4"
DS4P_DISPLAY = "http://hl7.org/fhir/uv/security-label-ds4p/StructureDefinition/extension-display"
SUBSCRIPTION_ERROR = "http://terminology.hl7.org/CodeSystem/subscription-error"
SIGNATURE_HEADER = "X-IOP-Signature"  # value "sha256=<hex HMAC-SHA256 of the exact body bytes>"
NOTIFICATION_TYPES = ("handshake", "heartbeat", "event-notification", "query-status", "query-event")
SUBSCRIPTION_STATUSES = ("requested", "active", "error", "off", "entered-in-error")


@dataclass(frozen=True)
class NotificationEvent:
    event_number: int      # persisted per subscription, 1-based, never reused
    timestamp: str         # FHIR instant the event happened
    focus_ref: str         # "CarePlan/1" or versioned "CarePlan/1/_history/3"
    resources: tuple[dict, ...] = ()  # the focus and its context (e.g. Goals); content for full-resource
    source_base: str | None = None    # FHIR base of the service owning the focus (careplan's for IOP plans)

    def base(self, default: str) -> str:
        return (self.source_base or default).rstrip("/")


def notification_bundle(spec: SubscriptionSpec, subscription_id: str, status: str, notification_type: str,
                        events: Sequence[NotificationEvent], events_since_start: int, base_url: str,
                        part2_notice: str | None = None, bundle_id: str | None = None,
                        timestamp: str | None = None) -> dict:
    """An event-notification (or query-event, for $events) Bundle with the payload spec.content asks for."""
    base = base_url.rstrip("/")
    params = status_parameters(subscription_id, spec.topic.url, status, notification_type, events_since_start, base,
                               events=events, content=spec.content)
    bundle = _history(params, subscription_id, base, bundle_id, timestamp)
    notice = part2_notice or consent.part2_notice()
    for event in events:
        bundle["entry"].extend(_event_entries(event, spec.content, event.base(base), notice))
    if events:
        bundle["meta"]["security"] = copy.deepcopy(codes.PART2_LABELS)
        _display_mark(bundle, notice)
    return bundle


def handshake_bundle(spec: SubscriptionSpec, subscription_id: str, base_url: str, bundle_id: str | None = None,
                     timestamp: str | None = None) -> dict:
    """Sent once when a Subscription is created; the endpoint must answer 2xx for it to become active."""
    params = status_parameters(subscription_id, spec.topic.url, "requested", "handshake", 0, base_url,
                               content=spec.content)
    return _history(params, subscription_id, base_url.rstrip("/"), bundle_id, timestamp)


def heartbeat_bundle(spec: SubscriptionSpec, subscription_id: str, status: str, events_since_start: int, base_url: str,
                     bundle_id: str | None = None, timestamp: str | None = None) -> dict:
    params = status_parameters(subscription_id, spec.topic.url, status, "heartbeat", events_since_start, base_url,
                               content=spec.content)
    return _history(params, subscription_id, base_url.rstrip("/"), bundle_id, timestamp)


def status_parameters(subscription_id: str, topic_url: str, status: str, notification_type: str,
                      events_since_start: int, base_url: str, events: Sequence[NotificationEvent] = (),
                      content: str = "full-resource", errors: Sequence[tuple[str, str]] = ()) -> dict:
    """A backport-subscription-status-r4 Parameters; errors are (subscription-error code, text) pairs."""
    if status not in SUBSCRIPTION_STATUSES or notification_type not in NOTIFICATION_TYPES:
        raise ValueError("unknown subscription status or notification type")
    base = base_url.rstrip("/")
    parameters = [{"name": "subscription", "valueReference": {"reference": f"{base}/Subscription/{subscription_id}"}}]
    if content != "empty":  # the IG: topic SHOULD NOT be present with empty payloads
        parameters.append({"name": "topic", "valueCanonical": topic_url})
    parameters += [{"name": "status", "valueCode": status}, {"name": "type", "valueCode": notification_type},
                   {"name": "events-since-subscription-start", "valueString": str(events_since_start)}]
    parameters += [_notification_event(e, content, e.base(base)) for e in events]
    parameters += [{"name": "error", "valueCodeableConcept": {"coding": [{"system": SUBSCRIPTION_ERROR, "code": code}],
                                                              "text": text}} for code, text in errors]
    return {"resourceType": "Parameters", "id": str(uuid.uuid4()), "meta": {"profile": [STATUS_PROFILE]},
            "parameter": parameters}


def status_search_bundle(statuses: Sequence[dict]) -> dict:
    """The $status answer: a searchset Bundle of one status Parameters per Subscription."""
    entries = [{"fullUrl": f"urn:uuid:{p['id']}", "resource": p, "search": {"mode": "match"}} for p in statuses]
    bundle = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "searchset", "timestamp": now_instant(),
              "total": len(entries)}
    return {**bundle, "entry": entries} if entries else bundle  # FHIR JSON has no empty arrays


def hmac_signature(secret: str, body: bytes) -> str:
    """The X-IOP-Signature header value for a posted body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header_value: str) -> bool:
    """What a receiver does; constant-time so a forger learns nothing from timing."""
    return hmac.compare_digest(hmac_signature(secret, body), header_value.strip())


def _history(params: dict, subscription_id: str, base: str, bundle_id: str | None, timestamp: str | None) -> dict:
    status_entry = {"fullUrl": f"urn:uuid:{params['id']}", "resource": params,
                    "request": {"method": "GET", "url": f"{base}/Subscription/{subscription_id}/$status"},
                    "response": {"status": "200"}}
    return {"resourceType": "Bundle", "id": bundle_id or str(uuid.uuid4()), "meta": {"profile": [NOTIFICATION_PROFILE]},
            "type": "history", "timestamp": timestamp or now_instant(), "entry": [status_entry]}


def _notification_event(event: NotificationEvent, content: str, base: str) -> dict:
    parts = [{"name": "event-number", "valueString": str(event.event_number)},
             {"name": "timestamp", "valueInstant": event.timestamp}]
    if content != "empty":  # the IG: no resource references at all with empty payloads
        parts.append({"name": "focus", "valueReference": {"reference": f"{base}/{event.focus_ref}"}})
        parts += [{"name": "additional-context", "valueReference": {"reference": f"{base}/{r}"}}
                  for r in _context_refs(event)]
    return {"name": "notification-event", "part": parts}


def _event_entries(event: NotificationEvent, content: str, base: str, notice: str) -> list[dict]:
    """id-only: fullUrl and request only; full-resource: the labelled resources. A history Bundle needs
    request and response on every entry; GET of the resource is what the IG allows when no write applies."""
    if content == "empty":
        return []
    if content == "full-resource" and event.resources:
        return [_entry(_type_id(r), base, resource=_labelled(r, notice), url=_request_url(r, event))
                for r in event.resources]
    return [_entry(ref, base, url=ref) for ref in [event.focus_ref, *_context_refs(event)]]


def _entry(type_id: str, base: str, url: str, resource: dict | None = None) -> dict:
    entry = {"fullUrl": f"{base}/{type_id.split('/_history/')[0]}"}
    if resource is not None:
        entry["resource"] = resource
    return {**entry, "request": {"method": "GET", "url": url}, "response": {"status": "200"}}


def _context_refs(event: NotificationEvent) -> list[str]:
    focus = event.focus_ref.split("/_history/")[0]
    return [_type_id(r) for r in event.resources if _type_id(r) != focus]


def _request_url(resource: dict, event: NotificationEvent) -> str:
    """The focus keeps its version (a vread of exactly what changed); context resources are plain reads."""
    return event.focus_ref if _type_id(resource) == event.focus_ref.split("/_history/")[0] else _type_id(resource)


def _type_id(resource: dict) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def _labelled(resource: dict, notice: str) -> dict:
    return _display_mark(consent.ensure_labels(resource), notice)


def display_mark(notice: str) -> dict:
    """The DS4P display mark extension (on Resource.meta) that carries the Part 2 notice."""
    return {"url": DS4P_DISPLAY, "valueAnnotation": {"text": notice}}


def _display_mark(target: dict, notice: str) -> dict:
    """Replaces any earlier display mark, so a re-sent resource carries the notice once."""
    meta = target.setdefault("meta", {})
    meta["extension"] = [*(e for e in meta.get("extension", []) if e.get("url") != DS4P_DISPLAY), display_mark(notice)]
    return target
