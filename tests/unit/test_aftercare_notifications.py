"""Given a subscription and events, when aftercare notifies the EHR, then it posts Backport-IG R4 Bundles."""
import copy
from datetime import date

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.parameters import Parameters

from services.aftercare.consent import part2_notice
from services.aftercare.notifications import (
    DS4P_DISPLAY,
    NOTIFICATION_PROFILE,
    SIGNATURE_HEADER,
    STATUS_PROFILE,
    NotificationEvent,
    handshake_bundle,
    heartbeat_bundle,
    hmac_signature,
    notification_bundle,
    status_parameters,
    status_search_bundle,
    verify_signature,
)
from services.aftercare.step_down import StepDownIds, step_down_plan
from services.aftercare.subscriptions import TOPIC_BASE, TOPICS, SubscriptionSpec
from shared import codes

BASE = "https://iop.example.org/fhir/"
TOPIC = TOPICS[f"{TOPIC_BASE}/aftercare-planned"]
WHEN = "2025-03-07T10:00:00.000Z"


def spec(content: str) -> SubscriptionSpec:
    return SubscriptionSpec(topic=TOPIC, endpoint="https://ehr.example.org/notify", content=content)


def plan_resources() -> list[dict]:
    iop = {"resourceType": "CarePlan", "id": "iop-1", "status": "completed", "intent": "plan",
           "subject": {"reference": "Patient/p1"}}
    return step_down_plan(iop, [], StepDownIds.derived("iop-1"), date(2025, 3, 7)).resources()


def events(*numbers: int) -> list[NotificationEvent]:
    resources = tuple(plan_resources()[:2])  # the aftercare CarePlan and its first Goal
    return [NotificationEvent(n, WHEN, f"CarePlan/iop-1-aftercare/_history/{n}", resources) for n in numbers]


def notify(content: str, numbers=(7,), since=None, **kw) -> dict:
    return notification_bundle(spec(content), "sub-1", "active", "event-notification", events(*numbers),
                               since or max(numbers), BASE, **kw)


def status_of(bundle: dict) -> dict:
    return bundle["entry"][0]["resource"]


def params(parameters: dict, name: str) -> list[dict]:
    return [p for p in parameters["parameter"] if p["name"] == name]


def value(parameters: dict, name: str):
    (param,) = params(parameters, name)
    return next(v for k, v in param.items() if k.startswith("value"))


def parts(event_param: dict) -> dict[str, list]:
    found: dict[str, list] = {}
    for part in event_param["part"]:
        found.setdefault(part["name"], []).append(next(v for k, v in part.items() if k.startswith("value")))
    return found


@pytest.mark.parametrize("content", ["empty", "id-only", "full-resource"])
def test_every_notification_parses_as_an_r4b_history_bundle(content):
    bundle = notify(content, numbers=(7, 8))
    Bundle.model_validate(bundle)
    Parameters.model_validate(status_of(bundle))
    assert bundle["type"] == "history" and bundle["meta"]["profile"] == [NOTIFICATION_PROFILE]
    assert status_of(bundle)["meta"]["profile"] == [STATUS_PROFILE]


def test_status_parameters_follow_the_backport_r4_profile():
    status = status_of(notify("full-resource", numbers=(41, 42), since=42))
    assert value(status, "subscription") == {"reference": "https://iop.example.org/fhir/Subscription/sub-1"}
    assert value(status, "topic") == TOPIC.url
    assert value(status, "status") == "active"
    assert value(status, "type") == "event-notification"
    assert value(status, "events-since-subscription-start") == "42"
    event_parts = [parts(p) for p in params(status, "notification-event")]
    assert [p["event-number"] for p in event_parts] == [["41"], ["42"]]
    assert event_parts[0]["timestamp"] == [WHEN]
    assert event_parts[0]["focus"] == [{"reference": f"{BASE}CarePlan/iop-1-aftercare/_history/41"}]
    assert event_parts[0]["additional-context"] == [{"reference": f"{BASE}Goal/iop-1-ag-no-return-to-use"}]


def test_the_status_entry_is_a_status_request():
    entry = notify("id-only")["entry"][0]
    assert entry["fullUrl"] == f"urn:uuid:{entry['resource']['id']}"
    assert entry["request"] == {"method": "GET", "url": "https://iop.example.org/fhir/Subscription/sub-1/$status"}
    assert entry["response"] == {"status": "200"}


def test_event_numbers_are_carried_exactly():
    status = status_of(notify("id-only", numbers=(1, 2, 1000000007), since=1000000007))
    assert [parts(p)["event-number"][0] for p in params(status, "notification-event")] == ["1", "2", "1000000007"]
    assert value(status, "events-since-subscription-start") == "1000000007"


def test_empty_content_has_no_references_and_no_topic():
    bundle = notify("empty")
    status = status_of(bundle)
    assert len(bundle["entry"]) == 1
    assert not params(status, "topic")
    assert set(parts(params(status, "notification-event")[0])) == {"event-number", "timestamp"}


def test_id_only_entries_have_full_url_and_request_but_no_resource():
    entries = notify("id-only")["entry"][1:]
    assert [e["fullUrl"] for e in entries] == [f"{BASE}CarePlan/iop-1-aftercare",
                                               f"{BASE}Goal/iop-1-ag-no-return-to-use"]
    assert all("resource" not in e for e in entries)
    assert entries[0]["request"] == {"method": "GET", "url": "CarePlan/iop-1-aftercare/_history/7"}
    assert entries[1]["request"] == {"method": "GET", "url": "Goal/iop-1-ag-no-return-to-use"}
    assert all(e["response"] == {"status": "200"} for e in entries)


def test_focus_urls_name_the_service_that_owns_the_resource():
    event = NotificationEvent(3, WHEN, "CarePlan/iop-1", source_base="https://iop.example.org:8082/fhir/")
    bundle = notification_bundle(spec("id-only"), "sub-1", "active", "event-notification", [event], 3, BASE)
    assert parts(params(status_of(bundle), "notification-event")[0])["focus"] == [
        {"reference": "https://iop.example.org:8082/fhir/CarePlan/iop-1"}]
    assert bundle["entry"][1]["fullUrl"] == "https://iop.example.org:8082/fhir/CarePlan/iop-1"
    assert value(status_of(bundle), "subscription") == {"reference": f"{BASE}Subscription/sub-1"}


def test_id_only_without_resources_lists_the_focus():
    event = NotificationEvent(3, WHEN, "CarePlan/x")
    bundle = notification_bundle(spec("id-only"), "sub-1", "active", "event-notification", [event], 3, BASE)
    assert [e["fullUrl"] for e in bundle["entry"][1:]] == [f"{BASE}CarePlan/x"]
    Bundle.model_validate(bundle)


def test_full_resource_entries_carry_labelled_resources_and_the_notice():
    bundle = notify("full-resource")
    careplan, goal = (e["resource"] for e in bundle["entry"][1:])
    assert (careplan["id"], goal["id"]) == ("iop-1-aftercare", "iop-1-ag-no-return-to-use")
    for resource in (careplan, goal, bundle):
        assert resource["meta"]["security"] == codes.PART2_LABELS
        assert resource["meta"]["extension"] == [{"url": DS4P_DISPLAY, "valueAnnotation": {"text": part2_notice()}}]


def test_full_resource_without_resources_falls_back_to_references():
    event = NotificationEvent(3, WHEN, "CarePlan/x")
    bundle = notification_bundle(spec("full-resource"), "sub-1", "active", "event-notification", [event], 3, BASE)
    assert bundle["entry"][1] == {"fullUrl": f"{BASE}CarePlan/x", "request": {"method": "GET", "url": "CarePlan/x"},
                                  "response": {"status": "200"}}


def test_the_events_resources_are_not_modified():
    event = events(7)[0]
    before = copy.deepcopy(event.resources)
    notification_bundle(spec("full-resource"), "sub-1", "active", "event-notification", [event], 7, BASE)
    assert event.resources == before and "extension" not in event.resources[0]["meta"]


def test_resending_does_not_duplicate_labels_or_marks():
    first = notify("full-resource")["entry"][1]["resource"]
    event = NotificationEvent(8, WHEN, "CarePlan/iop-1-aftercare", (first,))
    again = notification_bundle(spec("full-resource"), "sub-1", "active", "event-notification", [event], 8, BASE)
    meta = again["entry"][1]["resource"]["meta"]
    assert len(meta["security"]) == 4 and len(meta["extension"]) == 1


def test_a_custom_notice_is_used():
    bundle = notify("full-resource", part2_notice="42 CFR part 2 prohibits unauthorized use or disclosure.")
    assert bundle["meta"]["extension"][0]["valueAnnotation"]["text"].endswith("disclosure.")


def test_query_event_bundles_for_the_events_operation():
    bundle = notification_bundle(spec("id-only"), "sub-1", "active", "query-event", events(3, 4), 9, BASE)
    Bundle.model_validate(bundle)
    assert value(status_of(bundle), "type") == "query-event"


def test_handshake():
    bundle = handshake_bundle(spec("id-only"), "sub-1", BASE)
    Bundle.model_validate(bundle)
    status = status_of(bundle)
    assert (value(status, "status"), value(status, "type")) == ("requested", "handshake")
    assert value(status, "events-since-subscription-start") == "0"
    assert len(bundle["entry"]) == 1 and "security" not in bundle["meta"]


def test_heartbeat_keeps_the_event_count():
    bundle = heartbeat_bundle(spec("full-resource"), "sub-1", "active", 12, BASE, bundle_id="hb", timestamp=WHEN)
    Bundle.model_validate(bundle)
    assert (bundle["id"], bundle["timestamp"]) == ("hb", WHEN)
    assert value(status_of(bundle), "type") == "heartbeat"
    assert value(status_of(bundle), "events-since-subscription-start") == "12"
    assert not params(status_of(bundle), "notification-event")


def test_status_operation_answer_with_an_error():
    status = status_parameters("sub-1", TOPIC.url, "error", "query-status", 5, BASE,
                               errors=[("no-response", "EHR endpoint did not answer for 24 hours")])
    Parameters.model_validate(status)
    assert value(status, "error")["coding"][0]["code"] == "no-response"
    bundle = status_search_bundle([status])
    Bundle.model_validate(bundle)
    assert bundle["type"] == "searchset" and bundle["total"] == 1 and bundle["entry"][0]["resource"] is status


def test_unknown_status_or_type_is_a_programming_error():
    with pytest.raises(ValueError):
        status_parameters("sub-1", TOPIC.url, "paused", "heartbeat", 0, BASE)
    with pytest.raises(ValueError):
        status_parameters("sub-1", TOPIC.url, "active", "ping", 0, BASE)


def test_hmac_signature_is_sha256_hex_over_the_body():
    body = b'{"resourceType":"Bundle"}'
    signature = hmac_signature("s3cret-s3cret-s3cret", body)
    assert SIGNATURE_HEADER == "X-IOP-Signature"
    # Known answer from openssl: printf '%s' "$body" | openssl dgst -sha256 -hmac s3cret-s3cret-s3cret
    assert signature == "sha256=268e32bba8ae9a2f351e3cba0b62ba30759f3ead4b4b0ebf5a55a45fbbc61b13"
    assert verify_signature("s3cret-s3cret-s3cret", body, signature)
    assert not verify_signature("s3cret-s3cret-s3cret", body + b" ", signature)
    assert not verify_signature("another-secret-value", body, signature)
