"""CloudEvents 1.0 in Kafka binary mode: ce_* headers, a FHIR Bundle (collection) as the value.

Building is for producers (the outbox); parsing, with marshmallow schemas, is for consumers:
an envelope that does not parse raises InvalidEnvelope and its record goes to the DLQ.
"""
from __future__ import annotations

import contextvars
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from shared import tracing
from shared.events.catalogue import BY_TYPE, event_type
from shared.fhir.outcome import FhirError
from shared.fhir.store import OutboxEvent
from shared.fhir.util import compact_json, now_instant
from shared.fhir.validation import check_structure, validate_resource

CONTENT_TYPE = "application/fhir+json; fhirVersion=4.0"
SPEC_VERSION = "1.0"

# The trace of the request or record being handled, so that the events it causes continue it.
current_trace: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_trace", default=None)


class InvalidEnvelope(Exception):
    """A record that is not a valid event of the contract; it can never be applied as it is."""


def new_traceparent(parent: str | None = None) -> str:
    trace_id = parent.split("-")[1] if parent and parent.count("-") == 3 else os.urandom(16).hex()
    return f"00-{trace_id}-{os.urandom(8).hex()}-01"


@dataclass(frozen=True)
class Event:
    """A consumed event: headers decoded, value parsed as a FHIR Bundle."""

    id: str
    type: str
    source: str
    time: str
    subject: str
    key: str
    traceparent: str | None
    bundle: dict[str, Any]

    @property
    def resources(self) -> list[dict[str, Any]]:
        return [e["resource"] for e in self.bundle.get("entry", []) if "resource" in e]

    @property
    def focus(self) -> dict[str, Any]:
        return self.resources[0]

    def of_type(self, rtype: str) -> list[dict[str, Any]]:
        return [r for r in self.resources if r.get("resourceType") == rtype]


def _entry(base: str, resource: dict) -> dict[str, Any]:
    return {"fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}", "resource": resource}


def build_event(type_name: str, base: str, patient_id: str, focus: dict, context: list[dict] = ()) -> OutboxEvent:
    """The outbox row for one event; `base` is the FHIR base of the service that owns the focus."""
    et = event_type(type_name)
    if focus.get("resourceType") != et.focus:
        raise ValueError(f"{type_name} carries a {et.focus}, not a {focus.get('resourceType')}")
    version = (focus.get("meta") or {}).get("versionId")
    subject = f"{focus['resourceType']}/{focus['id']}" + (f"/_history/{version}" if version else "")
    bundle = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "collection", "timestamp": now_instant(),
              "entry": [_entry(base, focus), *(_entry(base, r) for r in context)]}
    headers = [("ce_specversion", SPEC_VERSION), ("ce_id", str(uuid.uuid4())), ("ce_source", et.source),
               ("ce_type", et.type), ("ce_time", now_instant()), ("ce_subject", subject),
               ("content-type", CONTENT_TYPE),
               ("traceparent", tracing.traceparent() or new_traceparent(current_trace.get()))]
    return OutboxEvent(et.topic, patient_id, headers, compact_json(bundle))


class HeadersSchema(Schema):
    ce_specversion = fields.String(required=True, validate=validate.Equal(SPEC_VERSION))
    ce_id = fields.String(required=True, validate=validate.Length(min=1, max=200))
    ce_source = fields.String(required=True, validate=validate.Length(min=1))
    ce_type = fields.String(required=True, validate=validate.OneOf(sorted(BY_TYPE)))
    ce_time = fields.AwareDateTime(required=True)
    ce_subject = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z]+/[A-Za-z0-9\-.]{1,64}"))
    content_type = fields.String(required=True, data_key="content-type",
                                 validate=validate.Regexp(r"^application/fhir\+json"))
    traceparent = fields.String(load_default=None, validate=validate.Regexp(r"^[0-9a-f]{2}-[0-9a-f]{32}-"))

    class Meta:
        unknown = "exclude"


class BundleShapeSchema(Schema):
    resourceType = fields.String(required=True, validate=validate.Equal("Bundle"))
    type = fields.String(required=True, validate=validate.Equal("collection"))
    entry = fields.List(fields.Dict(), required=True, validate=validate.Length(min=1))

    class Meta:
        unknown = "include"

    @validates_schema
    def entries_have_resources(self, data: dict, **_: Any) -> None:
        if any(not isinstance(e.get("resource"), dict) for e in data["entry"]):
            raise ValidationError("every entry must carry a resource", "entry")


# One instance each, used by every call (marshmallow's schemas keep no state between loads): making a schema
# costs more than a load, about 0.1 ms per event.
_HEADERS, _BUNDLE_SHAPE = HeadersSchema(), BundleShapeSchema()


def _decode_headers(raw: list[tuple[str, bytes]] | None) -> dict[str, str]:
    try:
        return {k: v.decode("utf-8") for k, v in (raw or [])}
    except (UnicodeDecodeError, AttributeError) as exc:
        raise InvalidEnvelope(f"headers are not UTF-8 text: {exc}") from None


def parse_event(headers: list[tuple[str, bytes]] | None, key: bytes | None, value: bytes | None, *,
                full: bool = True) -> Event:
    """The event of a Kafka record, or InvalidEnvelope with the reason.

    The value is checked as FHIR: whole (`full`, fhir.resources' models as well), or its structure only
    (`check_structure`), which is what the suite's consumers do by default for events that every
    producing service validated before it stored them.
    """
    decoded = _decode_headers(headers)
    try:
        h = _HEADERS.load(decoded)
    except ValidationError as exc:
        raise InvalidEnvelope(f"CloudEvents headers: {exc.messages}") from None
    try:
        bundle = json.loads(value or b"")
        _BUNDLE_SHAPE.load(bundle)
        (validate_resource if full else check_structure)(bundle, "Bundle")
    except (ValueError, ValidationError) as exc:
        raise InvalidEnvelope(f"value is not a FHIR Bundle of type collection: {str(exc)[:300]}") from None
    except FhirError as exc:
        raise InvalidEnvelope(f"value is not valid FHIR: {str(exc)[:300]}") from None
    focus_type = bundle["entry"][0]["resource"].get("resourceType")
    if focus_type != BY_TYPE[h["ce_type"]].focus:
        raise InvalidEnvelope(f"{h['ce_type']} must carry a {BY_TYPE[h['ce_type']].focus} first, not {focus_type}")
    if not key:
        raise InvalidEnvelope("the record has no key (the patient id)")
    return Event(h["ce_id"], h["ce_type"], h["ce_source"], decoded["ce_time"], h["ce_subject"],
                 key.decode("utf-8", "replace"), h["traceparent"], bundle)
