"""Topic-based EHR subscriptions (HL7 Subscriptions R5 Backport IG 1.1.0, R4 profile backport-subscription).

The topic catalogue, validation of an R4 Subscription into a SubscriptionSpec, and event matching.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from shared.fhir.outcome import Issue

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
BACKPORT_SUBSCRIPTION = f"{BACKPORT}/backport-subscription"
FILTER_CRITERIA = f"{BACKPORT}/backport-filter-criteria"        # on Subscription.criteria, valueString
PAYLOAD_CONTENT = f"{BACKPORT}/backport-payload-content"        # on Subscription.channel.payload, valueCode
HEARTBEAT_PERIOD = f"{BACKPORT}/backport-heartbeat-period"      # on Subscription.channel, valueUnsignedInt
TIMEOUT = f"{BACKPORT}/backport-timeout"                        # on Subscription.channel, valueUnsignedInt
MAX_COUNT = f"{BACKPORT}/backport-max-count"                    # on Subscription.channel, valuePositiveInt
CAPABILITY_TOPIC = f"{BACKPORT}/capabilitystatement-subscriptiontopic-canonical"
LOCAL = "https://iop-suite.org/fhir/StructureDefinition"
HMAC_SECRET = f"{LOCAL}/subscription-hmac-secret"      # on Subscription.channel, valueString (write-only)
DELIVERY_MODE = f"{LOCAL}/subscription-delivery-mode"  # on Subscription.channel, valueCode notification | write-back
RECIPIENT = f"{LOCAL}/subscription-recipient"          # on Subscription, valueReference (Organization or identifier)
PATIENT_ID_SYSTEM = f"{LOCAL}/subscription-patient-identifier-system"  # on channel, valueUri; write-back needs it
TOPIC_BASE = "https://iop-suite.org/fhir/SubscriptionTopic"

CONTENTS = ("empty", "id-only", "full-resource")
MODES = ("notification", "write-back")
MIME_TYPES = ("application/fhir+json", "application/json")
RESERVED_HEADERS = {"content-type", "content-length", "host", "x-iop-signature", "transfer-encoding"}
LOOPBACK = {"localhost", "127.0.0.1", "::1"}
MIN_HEARTBEAT_S, MAX_HEARTBEAT_S = 60, 86400
DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S = 30, 300
MIN_SECRET_LEN = 16
HEADER = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n]*)")


@dataclass(frozen=True)
class Topic:
    url: str
    event_type: str       # the CloudEvents type on Kafka
    resource_type: str    # the focus of each notification
    description: str
    filters: tuple[str, ...] = ("patient",)


def _topic(name: str, event_type: str, resource_type: str, description: str) -> Topic:
    return Topic(f"{TOPIC_BASE}/{name}", event_type, resource_type, description)


TOPICS: dict[str, Topic] = {t.url: t for t in (
    _topic("careplan-created", "iop.careplan.created", "CarePlan", "An IOP treatment plan was drafted at admission"),
    _topic("careplan-revised", "iop.careplan.revised", "CarePlan", "A clinician revised an IOP treatment plan"),
    _topic("goal-updated", "iop.goal.updated", "Goal", "A treatment goal changed status or achievement"),
    _topic("careplan-graduated", "iop.careplan.graduated", "CarePlan", "The patient graduated; the IOP plan completed"),
    _topic("aftercare-planned", "iop.aftercare.planned", "CarePlan", "The aftercare plan and referrals exist"),
    _topic("checkin-missed", "iop.aftercare.checkin-missed", "CarePlan", "An aftercare check-in window passed unmet"),
)}
TOPICS_BY_EVENT: dict[str, Topic] = {t.event_type: t for t in TOPICS.values()}


@dataclass(frozen=True)
class SubscriptionSpec:
    topic: Topic
    endpoint: str
    content: str = "id-only"
    patients: frozenset[str] | None = None  # patient ids; None means every patient the consent gate allows
    headers: tuple[tuple[str, str], ...] = ()
    heartbeat_period_s: int | None = None
    timeout_s: int = DEFAULT_TIMEOUT_S
    max_count: int | None = None
    secret: str | None = None
    mode: str = "notification"
    recipient: str | None = None  # "Organization/x" or "system|value"; bound to the client's `organization` claim
    end: datetime | None = None
    patient_identifier_system: str | None = None  # which Patient.identifier names the patient on the EHR

    @property
    def write_back(self) -> bool:
        return self.mode == "write-back"

    def expired(self, now: datetime) -> bool:
        return self.end is not None and now >= self.end


def matches(spec: SubscriptionSpec, event_type: str, patient_id: str) -> bool:
    return spec.topic.event_type == event_type and (spec.patients is None or patient_id in spec.patients)


def topic_list_parameters() -> dict:
    """The $topic-list answer: one subscription-topic-canonical parameter per topic.

    IG 1.1.0 advertises topics in the CapabilityStatement (capability_topic_extensions); the operation and
    its parameter name come from the IG's first ballot and are kept for clients that still call it.
    """
    return {"resourceType": "Parameters",
            "parameter": [{"name": "subscription-topic-canonical", "valueCanonical": url} for url in TOPICS]}


def capability_topic_extensions() -> list[dict]:
    """Extensions for CapabilityStatement.rest.resource (Subscription), the IG 1.1.0 topic discovery."""
    return [{"url": CAPABILITY_TOPIC, "valueCanonical": url} for url in TOPICS]


def parse_subscription(sub: dict) -> SubscriptionSpec | list[Issue]:
    """A validated spec, or every problem found, each pointing at its element."""
    if sub.get("resourceType") != "Subscription":
        return [Issue("expected a Subscription resource", expression="Subscription")]
    issues: list[Issue] = []
    topic = _parse_topic(sub, issues)
    channel = sub.get("channel") or {}
    content = _parse_content(channel, issues)
    spec_fields = {
        "endpoint": _parse_endpoint(channel, content, issues), "content": content,
        "headers": _parse_headers(channel, issues),
        "heartbeat_period_s": _parse_seconds(channel, HEARTBEAT_PERIOD, MIN_HEARTBEAT_S, MAX_HEARTBEAT_S, issues),
        "timeout_s": _parse_seconds(channel, TIMEOUT, 1, MAX_TIMEOUT_S, issues) or DEFAULT_TIMEOUT_S,
        "max_count": _ext(channel, MAX_COUNT, "valuePositiveInt"),
        "secret": _parse_secret(channel, issues), "mode": _parse_mode(channel, content, issues),
        "patient_identifier_system": _ext(channel, PATIENT_ID_SYSTEM, "valueUri"),
        "recipient": recipient_of(sub), "end": _parse_end(sub, issues)}
    if not sub.get("reason"):
        issues.append(Issue("reason is required in R4", code="required", expression="Subscription.reason"))
    if channel.get("type") != "rest-hook":
        issues.append(Issue("only the rest-hook channel is supported", "not-supported",
                            expression="Subscription.channel.type"))
    if spec_fields["mode"] == "write-back" and not spec_fields["patient_identifier_system"]:
        issues.append(Issue("write-back needs the EHR's patient identifier system", code="required",
                            expression="Subscription.channel.extension"))
    patients = _parse_filters(sub, topic, issues) if topic else None
    if issues or topic is None:
        return issues
    return SubscriptionSpec(topic=topic, patients=patients, **spec_fields)


def _parse_topic(sub: dict, issues: list[Issue]) -> Topic | None:
    topic = TOPICS.get((sub.get("criteria") or "").split("|")[0])  # a canonical may carry |version
    if topic is None:
        issues.append(Issue("criteria must be a known topic canonical URL (see Subscription/$topic-list)",
                            "not-supported", expression="Subscription.criteria"))
    return topic


def _parse_filters(sub: dict, topic: Topic, issues: list[Issue]) -> frozenset[str] | None:
    """AND across filter extensions (IG), OR across comma-separated values (FHIR search)."""
    patients: frozenset[str] | None = None
    for ext in (sub.get("_criteria") or {}).get("extension", []):
        if ext.get("url") == FILTER_CRITERIA:
            found = _parse_filter(ext.get("valueString") or "", topic, issues)
            if found is not None:
                patients = found if patients is None else patients & found
    return patients


def _parse_filter(text: str, topic: Topic, issues: list[Issue]) -> frozenset[str] | None:
    where = "Subscription.criteria.extension"
    resource_type, _, query = text.rpartition("?")
    if resource_type and resource_type != topic.resource_type:
        issues.append(Issue(f"filter resource type must be {topic.resource_type}", expression=where))
    patients: frozenset[str] | None = None
    for pair in filter(None, query.split("&")):
        name, _, value = pair.partition("=")
        prefix, _, name = name.rpartition(".")  # the IG also allows "CarePlan.patient=..."
        if prefix and prefix != topic.resource_type:
            issues.append(Issue(f"filter resource type must be {topic.resource_type}", expression=where))
        if name not in topic.filters or not value:
            issues.append(Issue(f"unsupported filter '{name}'; allowed: {', '.join(topic.filters)}", expression=where))
            continue
        values = [v.split("/_history/")[0].split("/") for v in value.split(",")]
        if any(len(v) > 1 and v[-2] != "Patient" for v in values):
            issues.append(Issue("patient filter values must be Patient references", expression=where))
        found = frozenset(v[-1] for v in values)
        patients = found if patients is None else patients & found
    return patients


def _parse_content(channel: dict, issues: list[Issue]) -> str:
    payload_ext = (channel.get("_payload") or {}).get("extension", [])
    content = next((e.get("valueCode") for e in payload_ext if e.get("url") == PAYLOAD_CONTENT), "id-only")
    where = "Subscription.channel.payload"
    if content not in CONTENTS:
        issues.append(Issue(f"payload content must be one of {', '.join(CONTENTS)}", expression=where))
    if channel.get("payload", MIME_TYPES[0]) not in MIME_TYPES:
        issues.append(Issue("payload must be application/fhir+json", "not-supported", expression=where))
    return content


def _parse_endpoint(channel: dict, content: str, issues: list[Issue]) -> str:
    endpoint = channel.get("endpoint") or ""
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises ValueError for a port out of range, as urlsplit does for '[::1'
    except ValueError:
        issues.append(Issue("endpoint is not a valid URL", expression="Subscription.channel.endpoint"))
        return endpoint
    if parts.scheme not in ("http", "https") or not parts.hostname:
        issues.append(Issue("endpoint must be an absolute http(s) URL", expression="Subscription.channel.endpoint"))
    elif parts.scheme == "http" and content == "full-resource" and parts.hostname not in LOOPBACK:
        issues.append(Issue("full-resource payloads need an https endpoint", "security",
                            expression="Subscription.channel.endpoint"))
    return endpoint


def _parse_headers(channel: dict, issues: list[Issue]) -> tuple[tuple[str, str], ...]:
    headers = []
    for i, line in enumerate(channel.get("header", [])):
        found = HEADER.fullmatch(line or "")
        if not found or found.group(1).lower() in RESERVED_HEADERS:
            issues.append(Issue("header must be 'Name: value' and not a reserved header",
                                expression=f"Subscription.channel.header[{i}]"))
        else:
            headers.append((found.group(1), found.group(2).strip()))
    return tuple(headers)


def _parse_seconds(channel: dict, url: str, low: int, high: int, issues: list[Issue]) -> int | None:
    seconds = _ext(channel, url, "valueUnsignedInt")
    if seconds is not None and (not isinstance(seconds, int) or not low <= seconds <= high):
        name = url.rsplit("/backport-", 1)[-1]
        issues.append(Issue(f"{name} must be {low} to {high} seconds", expression="Subscription.channel.extension"))
    return seconds


def _parse_secret(channel: dict, issues: list[Issue]) -> str | None:
    secret = _ext(channel, HMAC_SECRET, "valueString")
    if secret is not None and len(secret) < MIN_SECRET_LEN:
        issues.append(Issue(f"HMAC secret must be at least {MIN_SECRET_LEN} characters", "security",
                            expression="Subscription.channel.extension"))
    return secret


def _parse_mode(channel: dict, content: str, issues: list[Issue]) -> str:
    mode = _ext(channel, DELIVERY_MODE, "valueCode") or "notification"
    if mode not in MODES or (mode == "write-back" and content != "full-resource"):
        issues.append(Issue("delivery mode must be notification, or write-back with full-resource content",
                            expression="Subscription.channel.extension"))
    return mode


def recipient_of(sub: dict) -> str | None:
    """The organisation a Subscription delivers for: "Organization/x", or "system|value" for an identifier."""
    value = _ext(sub, RECIPIENT, "valueReference") or {}
    identifier = value.get("identifier") or {}
    if identifier.get("system") and identifier.get("value"):
        return f"{identifier['system']}|{identifier['value']}"
    return value.get("reference")


def _parse_end(sub: dict, issues: list[Issue]) -> datetime | None:
    try:
        end = datetime.fromisoformat(sub["end"]) if sub.get("end") else None
    except ValueError:
        issues.append(Issue("end must be a FHIR instant", expression="Subscription.end"))
        return None
    return end.replace(tzinfo=UTC) if end and end.tzinfo is None else end


def _ext(element: dict, url: str, value_key: str):
    return next((e.get(value_key) for e in element.get("extension", []) if e.get("url") == url), None)
