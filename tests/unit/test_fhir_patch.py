"""Patches and result shaping as pure functions: JSON Patch, FHIRPath Patch, merge patch, _summary, _elements."""
from __future__ import annotations

import pytest

from shared.fhir.elements import parse_elements, summarised, with_elements
from shared.fhir.outcome import FhirError
from shared.fhir.patch import apply_fhirpath_patch, merge_patch, patched

PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1988-04-12",
           "name": [{"family": "Rivera", "given": ["Alex", "Sam"]}],
           "identifier": [{"system": "urn:a", "value": "1"}, {"system": "urn:b", "value": "2"}],
           "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Alex</div>"}}


def op(kind: str, path: str, **parts: dict) -> dict:
    return {"name": "operation", "part": [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path},
                                          *({"name": k, **v} for k, v in parts.items())]}


def fhirpath(*operations: dict) -> dict:
    return {"resourceType": "Parameters", "parameter": list(operations)}


def test_fhirpath_patch_finds_elements_by_where_index_and_name() -> None:
    result = apply_fhirpath_patch(PATIENT, fhirpath(
        op("delete", "Patient.identifier.where(system='urn:a')"),
        op("replace", "Patient.name[0].given[1]", value={"valueString": "Jo"}),
        op("replace", "Patient.birthDate", value={"valueDate": "1988-04-13"}),
        op("add", "Patient.name[0]", name={"valueString": "prefix"}, value={"valueString": "Ms"})))

    assert result["identifier"] == [{"system": "urn:b", "value": "2"}]
    assert result["name"][0]["given"] == ["Alex", "Jo"]
    assert result["name"][0]["prefix"] == ["Ms"]  # a repeating element is added to as a list
    assert result["birthDate"] == "1988-04-13"
    assert PATIENT["name"][0]["given"] == ["Alex", "Sam"]  # the input is left as it was


def test_fhirpath_patch_builds_a_backbone_value_from_parts() -> None:
    contact = {"name": "value", "part": [{"name": "gender", "valueCode": "male"},
                                         {"name": "name", "valueHumanName": {"family": "Rivera"}}]}

    result = apply_fhirpath_patch(PATIENT, fhirpath({"name": "operation", "part": [
        {"name": "type", "valueCode": "add"}, {"name": "path", "valueString": "Patient"},
        {"name": "name", "valueString": "contact"}, contact]}))

    assert result["contact"] == [{"gender": "male", "name": {"family": "Rivera"}}]


@pytest.mark.parametrize("document", [
    fhirpath(op("replace", "Patient.identifier", value={"valueString": "x"})),  # two elements, not one
    fhirpath(op("replace", "Patient.deceasedBoolean", value={"valueBoolean": True})),  # none
    fhirpath(op("insert", "Patient.identifier", value={"valueString": "x"}, index={"valueInteger": 9})),
    fhirpath(op("move", "Patient.gender", source={"valueInteger": 0}, destination={"valueInteger": 0})),
    fhirpath(op("delete", "Patient")),
])
def test_a_fhirpath_patch_that_cannot_be_applied_is_422(document: dict) -> None:
    with pytest.raises(FhirError) as refused:
        apply_fhirpath_patch(PATIENT, document)
    assert refused.value.status == 422


def test_a_patch_may_not_change_the_id_or_leave_an_invalid_resource() -> None:
    for document in ([{"op": "replace", "path": "/id", "value": "p2"}], {"gender": "maybe"},
                     [{"op": "replace", "path": "/resourceType", "value": "Group"}]):
        with pytest.raises(FhirError) as refused:
            patched(PATIENT, document)
        assert refused.value.status == 422, document


def test_merge_patch_follows_rfc_7386() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": None, "e": 4}, "d": [1]}) == \
        {"a": {"c": 2, "e": 4}, "d": [1]}


def test_summary_and_elements_keep_what_the_definitions_say() -> None:
    summary = summarised(PATIENT, "true")
    text = summarised(PATIENT, "text")
    data = summarised(PATIENT, "data")
    elements = with_elements(PATIENT, parse_elements("gender,Patient.birthDate", "Patient"))

    assert "text" not in summary and summary["name"] and summary["gender"]
    assert set(text) == {"resourceType", "id", "meta", "text"}
    assert "text" not in data and data["identifier"]
    assert set(elements) == {"resourceType", "id", "meta", "gender", "birthDate"}
    assert {t["code"] for t in elements["meta"]["tag"]} == {"SUBSETTED"}
    with pytest.raises(FhirError):
        parse_elements("name.family", "Patient")
