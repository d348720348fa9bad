"""Given an EHR's Backport-IG R4 Subscription, when aftercare reads it, then it is validated into a spec."""
from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.parameters import Parameters
from fhir.resources.R4B.subscription import Subscription

from services.aftercare.subscriptions import (
    DELIVERY_MODE,
    FILTER_CRITERIA,
    HEARTBEAT_PERIOD,
    HMAC_SECRET,
    MAX_COUNT,
    PATIENT_ID_SYSTEM,
    PAYLOAD_CONTENT,
    RECIPIENT,
    TIMEOUT,
    TOPIC_BASE,
    TOPICS,
    TOPICS_BY_EVENT,
    SubscriptionSpec,
    capability_topic_extensions,
    matches,
    parse_subscription,
    topic_list_parameters,
)
from shared.fhir.outcome import Issue

CAREPLAN_CREATED = f"{TOPIC_BASE}/careplan-created"
SECRET = "s3cret-s3cret-s3cret"


def subscription(filters=("CarePlan?patient=Patient/123",), content="id-only", channel_ext=(), **changes) -> dict:
    """The IG's admission example, pointed at one of our topics."""
    sub = {
        "resourceType": "Subscription", "id": "sub-1",
        "meta": {"profile": ["http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"]},
        "status": "requested", "end": "2026-12-31T12:00:00Z", "reason": "Aftercare updates for our patients",
        "criteria": CAREPLAN_CREATED,
        "_criteria": {"extension": [{"url": FILTER_CRITERIA, "valueString": f} for f in filters]},
        "channel": {"type": "rest-hook", "endpoint": "https://ehr.example.org/fhir/notify",
                    "header": ["Authorization: Bearer abc"],
                    "extension": [{"url": HEARTBEAT_PERIOD, "valueUnsignedInt": 86400},
                                  {"url": TIMEOUT, "valueUnsignedInt": 60},
                                  {"url": MAX_COUNT, "valuePositiveInt": 20}, *channel_ext],
                    "payload": "application/fhir+json",
                    "_payload": {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": content}]}}}
    sub.update(changes)
    return sub


def spec_of(sub: dict) -> SubscriptionSpec:
    parsed = parse_subscription(sub)
    assert isinstance(parsed, SubscriptionSpec), parsed
    return parsed


def issues_of(sub: dict) -> list[Issue]:
    parsed = parse_subscription(sub)
    assert isinstance(parsed, list) and parsed, parsed
    return parsed


def test_the_example_subscription_is_valid_r4_and_parses():
    sub = subscription(channel_ext=[{"url": HMAC_SECRET, "valueString": SECRET}])
    Subscription.model_validate(sub)
    spec = spec_of(sub)
    assert spec.topic.event_type == "iop.careplan.created"
    assert spec.patients == frozenset({"123"})
    assert spec.endpoint == "https://ehr.example.org/fhir/notify"
    assert (spec.content, spec.mode, spec.write_back) == ("id-only", "notification", False)
    assert spec.headers == (("Authorization", "Bearer abc"),)
    assert (spec.heartbeat_period_s, spec.timeout_s, spec.max_count) == (86400, 60, 20)
    assert spec.secret == SECRET
    assert spec.end == datetime(2026, 12, 31, 12, tzinfo=UTC)


def test_catalogue_maps_each_topic_to_its_event_type_and_focus():
    expected = {"careplan-created": ("iop.careplan.created", "CarePlan"),
                "careplan-revised": ("iop.careplan.revised", "CarePlan"),
                "goal-updated": ("iop.goal.updated", "Goal"),
                "careplan-graduated": ("iop.careplan.graduated", "CarePlan"),
                "aftercare-planned": ("iop.aftercare.planned", "CarePlan"),
                "checkin-missed": ("iop.aftercare.checkin-missed", "CarePlan")}
    assert {url.rsplit("/", 1)[1]: (t.event_type, t.resource_type) for url, t in TOPICS.items()} == expected
    assert all(TOPICS_BY_EVENT[t.event_type] is t and t.filters == ("patient",) for t in TOPICS.values())


def test_defaults_id_only_and_no_patient_filter():
    sub = subscription(filters=())
    del sub["channel"]["_payload"], sub["channel"]["extension"]
    spec = spec_of(sub)
    assert (spec.content, spec.patients, spec.timeout_s, spec.heartbeat_period_s) == ("id-only", None, 30, None)


@pytest.mark.parametrize("text", ["CarePlan?patient=Patient/123", "patient=Patient/123", "patient=123",
                                  "CarePlan.patient=Patient/123", "CarePlan?patient=Patient/123,Patient/456",
                                  "patient=https://iop.example.org/fhir/Patient/123"])
def test_filter_forms(text):
    assert "123" in spec_of(subscription(filters=(text,))).patients


def test_multiple_filters_are_anded():
    spec = spec_of(subscription(filters=("patient=Patient/1,Patient/2", "patient=Patient/2,Patient/3")))
    assert spec.patients == frozenset({"2"})


@pytest.mark.parametrize("text", ["CarePlan?status=active", "CarePlan?subject=Patient/1",
                                  "CarePlan?patient:missing=true", "Goal?patient=Patient/1", "CarePlan?patient=",
                                  "CarePlan?patient=Group/1"])
def test_disallowed_filters_are_refused(text):
    issues = issues_of(subscription(filters=(text,)))
    assert issues[0].expression == "Subscription.criteria.extension"


def test_unknown_topic_is_refused():
    issues = issues_of(subscription(criteria="http://hl7.org/SubscriptionTopic/admission"))
    assert issues[0].expression == "Subscription.criteria" and issues[0].code == "not-supported"


def test_versioned_topic_canonical_is_accepted():
    assert spec_of(subscription(criteria=f"{CAREPLAN_CREATED}|1.0")).topic.url == CAREPLAN_CREATED


def test_only_rest_hook_channels():
    sub = subscription()
    sub["channel"]["type"] = "websocket"
    assert issues_of(sub)[0].expression == "Subscription.channel.type"


@pytest.mark.parametrize("endpoint", ["", "ftp://ehr/x", "ehr.example.org/notify", "https://"])
def test_endpoint_must_be_an_http_url(endpoint):
    sub = subscription()
    sub["channel"]["endpoint"] = endpoint
    assert issues_of(sub)[0].expression == "Subscription.channel.endpoint"


def test_full_resource_needs_https_except_on_loopback():
    sub = subscription(content="full-resource")
    sub["channel"]["endpoint"] = "http://ehr.example.org/notify"
    assert issues_of(sub)[0].code == "security"
    sub["channel"]["endpoint"] = "http://127.0.0.1:9000/notify"
    assert spec_of(sub).content == "full-resource"
    sub = subscription()
    sub["channel"]["endpoint"] = "http://ehr.example.org/notify"
    assert spec_of(sub).content == "id-only"


@pytest.mark.parametrize("content", ["empty", "id-only", "full-resource"])
def test_payload_contents(content):
    assert spec_of(subscription(content=content)).content == content


def test_unknown_payload_content_or_mime_type_is_refused():
    assert issues_of(subscription(content="everything"))[0].expression == "Subscription.channel.payload"
    sub = subscription()
    sub["channel"]["payload"] = "application/fhir+xml"
    assert issues_of(sub)[0].code == "not-supported"


@pytest.mark.parametrize("header", ["no colon", "Bad Name: x", "X-IOP-Signature: sha256=forged",
                                    "Content-Type: text/plain", "X-A: one\r\nX-B: two"])
def test_bad_or_reserved_headers_are_refused(header):
    sub = subscription()
    sub["channel"]["header"] = ["X-Ok: fine", header]
    assert issues_of(sub)[0].expression == "Subscription.channel.header[1]"


@pytest.mark.parametrize(("url", "value"), [(HEARTBEAT_PERIOD, 5), (HEARTBEAT_PERIOD, 0), (TIMEOUT, 0),
                                            (TIMEOUT, 3600), (TIMEOUT, "60")])
def test_heartbeat_and_timeout_bounds(url, value):
    sub = subscription()
    sub["channel"]["extension"] = [{"url": url, "valueUnsignedInt": value}]
    assert issues_of(sub)[0].expression == "Subscription.channel.extension"


def test_a_short_secret_is_refused():
    assert issues_of(subscription(channel_ext=[{"url": HMAC_SECRET, "valueString": "short"}]))[0].code == "security"


def test_write_back_mode_needs_full_resource_and_the_ehr_patient_identifier_system():
    write_back = [{"url": DELIVERY_MODE, "valueCode": "write-back"},
                  {"url": PATIENT_ID_SYSTEM, "valueUri": "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14"}]
    spec = spec_of(subscription(content="full-resource", channel_ext=write_back))
    assert spec.write_back and spec.mode == "write-back"
    assert spec.patient_identifier_system == "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14"
    assert issues_of(subscription(content="id-only", channel_ext=write_back))
    missing_system = issues_of(subscription(content="full-resource", channel_ext=write_back[:1]))
    assert missing_system[0].code == "required"
    assert issues_of(subscription(channel_ext=[{"url": DELIVERY_MODE, "valueCode": "carrier-pigeon"}]))


def test_recipient_extension_by_reference_or_identifier():
    by_ref = subscription(extension=[{"url": RECIPIENT, "valueReference": {"reference": "Organization/ehr-1"}}])
    assert spec_of(by_ref).recipient == "Organization/ehr-1"
    by_id = subscription(extension=[{"url": RECIPIENT, "valueReference": {
        "identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}}}])
    assert spec_of(by_id).recipient == "http://hl7.org/fhir/sid/us-npi|1234567893"
    Subscription.model_validate(by_id)


def test_reason_is_required_and_all_issues_are_reported_together():
    sub = subscription(reason=None, criteria="nope")
    sub["channel"]["type"] = "email"
    expressions = {i.expression for i in issues_of(sub)}
    assert {"Subscription.reason", "Subscription.criteria", "Subscription.channel.type"} <= expressions


def test_not_a_subscription():
    assert issues_of({"resourceType": "Patient"})[0].expression == "Subscription"


def test_bad_end_and_expiry():
    assert issues_of(subscription(end="soon"))[0].expression == "Subscription.end"
    spec = spec_of(subscription(end="2025-01-01"))
    assert spec.expired(datetime(2025, 1, 1, tzinfo=UTC)) and not spec.expired(datetime(2024, 12, 31, tzinfo=UTC))


def test_matches_event_type_and_patient():
    spec = spec_of(subscription())
    assert matches(spec, "iop.careplan.created", "123")
    assert not matches(spec, "iop.careplan.created", "456")
    assert not matches(spec, "iop.careplan.revised", "123")
    assert matches(spec_of(subscription(filters=())), "iop.careplan.created", "anyone")


def test_topic_list_parameters_lists_every_topic_canonical():
    params = topic_list_parameters()
    Parameters.model_validate(params)
    assert [p["name"] for p in params["parameter"]] == ["subscription-topic-canonical"] * len(TOPICS)
    assert [p["valueCanonical"] for p in params["parameter"]] == list(TOPICS)


def test_capability_statement_extensions_advertise_topics():
    resource = {"type": "Subscription", "extension": capability_topic_extensions()}
    capability = {"resourceType": "CapabilityStatement", "status": "active", "date": "2025-01-01", "kind": "instance",
                  "fhirVersion": "4.0.1", "format": ["json"], "rest": [{"mode": "server", "resource": [resource]}]}
    CapabilityStatement.model_validate(capability)
    assert [e["valueCanonical"] for e in resource["extension"]] == list(TOPICS)
