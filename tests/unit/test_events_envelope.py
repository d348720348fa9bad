"""The event contract without a broker: catalogue, AsyncAPI document, envelope build and parse."""
from __future__ import annotations

import json
import re

import pytest

from shared.config import ROOT
from shared.events import asyncapi
from shared.events.catalogue import ALL_TOPICS, BY_TYPE, TOPICS
from shared.events.envelope import InvalidEnvelope, build_event, parse_event

CAREPLAN = {"resourceType": "CarePlan", "id": "cp1", "meta": {"versionId": "4"}, "status": "active",
            "intent": "plan", "subject": {"reference": "Patient/p1"}}
GOAL = {"resourceType": "Goal", "id": "g1", "lifecycleStatus": "active", "description": {"text": "PHQ-9 below 10"},
        "subject": {"reference": "Patient/p1"}}


def wire(event):
    return [(k, v.encode()) for k, v in event.headers], event.key.encode(), event.value.encode()


def test_the_catalogue_has_the_contracts_topics_and_types() -> None:
    assert TOPICS == ("iop.intake.events", "iop.careplan.events", "iop.encounter.events", "iop.aftercare.events")
    assert "iop.careplan.events.dlq" in ALL_TOPICS
    assert BY_TYPE["iop.careplan.graduated"].topic == "iop.careplan.events"
    assert BY_TYPE["iop.assessment.completed"].topic == "iop.intake.events"
    assert len(BY_TYPE) == 15


def test_the_committed_asyncapi_document_matches_the_catalogue() -> None:
    committed = (ROOT / "docs" / "asyncapi.yaml").read_text()
    assert committed == asyncapi.render(), "regenerate: python -m shared.events.asyncapi > docs/asyncapi.yaml"
    for et in BY_TYPE.values():
        assert f"name: \"{et.type}\"" in committed


def test_an_event_is_a_cloudevent_in_binary_mode_with_the_focus_first() -> None:
    event = build_event("iop.careplan.revised", "http://h/fhir", "p1", CAREPLAN, [GOAL])
    headers = dict(event.headers)
    assert event.topic == "iop.careplan.events" and event.key == "p1"
    assert headers["ce_specversion"] == "1.0" and headers["ce_type"] == "iop.careplan.revised"
    assert headers["ce_subject"] == "CarePlan/cp1/_history/4" and headers["ce_source"] == "/iop/careplan"
    assert headers["content-type"] == "application/fhir+json; fhirVersion=4.0"
    bundle = json.loads(event.value)
    assert bundle["type"] == "collection"
    assert [e["fullUrl"] for e in bundle["entry"]] == ["http://h/fhir/CarePlan/cp1", "http://h/fhir/Goal/g1"]
    parsed = parse_event(*wire(event))
    assert parsed.id == headers["ce_id"] and parsed.focus["id"] == "cp1" and parsed.of_type("Goal") == [GOAL]


def test_each_event_gets_a_unique_id() -> None:
    ids = {dict(build_event("iop.goal.updated", "http://h", "p1", GOAL).headers)["ce_id"] for _ in range(50)}
    assert len(ids) == 50


def test_an_event_must_carry_its_types_focus() -> None:
    with pytest.raises(ValueError, match="carries a CarePlan"):
        build_event("iop.careplan.created", "http://h", "p1", GOAL)


@pytest.mark.parametrize("mutate, reason", [
    (lambda h, v: ([x for x in h if x[0] != "ce_type"], v), "ce_type"),
    (lambda h, v: ([(k, b"2.0" if k == "ce_specversion" else x) for k, x in h], v), "ce_specversion"),
    (lambda h, v: ([(k, b"iop.unknown" if k == "ce_type" else x) for k, x in h], v), "ce_type"),
    (lambda h, v: ([(k, b"text/plain" if k == "content-type" else x) for k, x in h], v), "content-type"),
    (lambda h, v: (h, b"{not json"), "not a FHIR Bundle"),
    (lambda h, v: (h, json.dumps({"resourceType": "Bundle", "type": "collection", "entry": []}).encode()),
     "not a FHIR Bundle"),
    (lambda h, v: (h, v.replace(b'"status":"active"', b'"status":"bogus"')), "not valid FHIR"),
    (lambda h, v: ([(k, b"\xff" if k == "ce_id" else x) for k, x in h], v), "UTF-8"),
])
@pytest.mark.parametrize("full", [True, False], ids=["full", "structure"])
def test_an_invalid_envelope_is_refused_with_its_reason(mutate, reason: str, full: bool) -> None:
    headers, key, value = wire(build_event("iop.careplan.created", "http://h", "p1", CAREPLAN))
    headers, value = mutate(headers, value)
    with pytest.raises(InvalidEnvelope, match=reason):
        parse_event(headers, key, value, full=full)


@pytest.mark.parametrize("change, path", [
    ({"statuz": "active"}, "Bundle.entry[0].resource.statuz"),  # unknown element
    ({"intent": ["plan"]}, "Bundle.entry[0].resource.intent"),  # an array where one value goes
    ({"subject": {"reference": "Patient/p1 x"}}, "Bundle.entry[0].resource.subject.reference"),
    ({"activity": []}, "Bundle.entry[0].resource.activity"),  # empty array
])
def test_a_structural_check_names_each_problem_by_its_path(change: dict, path: str) -> None:
    headers, key, value = wire(build_event("iop.careplan.created", "http://h", "p1", {**CAREPLAN, **change}))
    with pytest.raises(InvalidEnvelope, match=re.escape(path)):
        parse_event(headers, key, value, full=False)


def test_only_the_full_check_reads_the_lexical_form_of_primitives() -> None:
    headers, key, value = wire(build_event("iop.careplan.created", "http://h", "p1",
                                           {**CAREPLAN, "created": "last tuesday"}))
    assert parse_event(headers, key, value, full=False).focus["created"] == "last tuesday"
    with pytest.raises(InvalidEnvelope, match="created"):
        parse_event(headers, key, value, full=True)


def test_an_event_with_the_wrong_focus_or_no_key_is_refused() -> None:
    headers, key, value = wire(build_event("iop.goal.updated", "http://h", "p1", GOAL))
    headers = [(k, b"iop.careplan.created" if k == "ce_type" else v) for k, v in headers]
    with pytest.raises(InvalidEnvelope, match="must carry a CarePlan"):
        parse_event(headers, key, value)
    with pytest.raises(InvalidEnvelope, match="no key"):
        parse_event(*wire(build_event("iop.goal.updated", "http://h", "p1", GOAL))[:1], None,
                    wire(build_event("iop.goal.updated", "http://h", "p1", GOAL))[2])
