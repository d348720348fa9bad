"""The referral partner rules without a server: what each type and operation lets a partner do."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.auth import Principal, current_principal
from shared.fhir.outcome import FhirError
from shared.fhir.partners import PartnerAccess, confined_to, idempotency_scope, references
from shared.fhir.registry import Operation, Registry, ResourceDef


@pytest.fixture
def partner() -> Iterator[str]:
    token = current_principal.set(Principal("referrer", partner="alpha", grants={"*": "cruds"}))
    yield "alpha"
    current_principal.reset(token)


def intake_like() -> Registry:
    registry = Registry("intake", partners=True)
    registry.add(ResourceDef("Patient", partner=PartnerAccess.OWN))
    registry.add(ResourceDef("Questionnaire", partner=PartnerAccess.READ, read_only=True))
    registry.add(ResourceDef("Practitioner"))
    registry.add_operation(Operation("everything", "Patient", True, lambda **_: (200, {})))
    return registry


@pytest.mark.parametrize("access, allowed, refused", [
    (PartnerAccess.OWN, "cruds", ""), (PartnerAccess.READ, "rs", "cud"), (PartnerAccess.NONE, "", "cruds")])
def test_each_access_allows_exactly_its_interactions(access: PartnerAccess, allowed: str, refused: str) -> None:
    assert all(access.allows(p) for p in allowed) and not any(access.allows(p) for p in refused)


def test_a_partner_is_confined_to_its_own_resources_of_the_types_it_owns_and_refused_the_rest(partner: str) -> None:
    assert confined_to(PartnerAccess.OWN, "Patient", "s") == partner
    assert confined_to(PartnerAccess.READ, "Questionnaire", "r") is None  # the catalogue is everyone's
    for access, permission in ((PartnerAccess.READ, "u"), (PartnerAccess.NONE, "r")):
        with pytest.raises(FhirError) as refused:
            confined_to(access, "X", permission)
        assert refused.value.status == 403


def test_a_caller_without_a_partner_claim_is_not_confined() -> None:
    assert confined_to(PartnerAccess.NONE, "Practitioner", "d") is None
    assert idempotency_scope("bundle") == "bundle"


@pytest.mark.parametrize("pairs, operation", [
    ([("Practitioner", "r")], None), ([("Questionnaire", "c")], None), ([("*", "r")], None),
    ([("Unknown", "s")], None), ([("Patient", "r")], ("everything", None)), ([("Patient", "r")], ("match", None)),
])
def test_the_registry_refuses_a_partner_what_no_rule_opens_to_it(partner: str, pairs, operation) -> None:
    registry = intake_like()
    if operation is not None:
        operation = (operation[0], registry.operations.get(("Patient", True, operation[0])))
    with pytest.raises(FhirError) as refused:
        registry.check_partner(pairs, operation)
    assert refused.value.status == 403 and refused.value.issues[0].code == "forbidden"


def test_the_registry_lets_a_partner_use_its_own_types_and_read_the_catalogue(partner: str) -> None:
    intake_like().check_partner([("Patient", p) for p in "cruds"] + [("Questionnaire", "r")], None)
    assert idempotency_scope("bundle") != "bundle"  # its repeated requests find its own answers only


def test_a_service_not_open_to_partners_refuses_them_everything(partner: str) -> None:
    registry = Registry("careplan")
    registry.add(ResourceDef("CarePlan", partner=PartnerAccess.OWN))
    for pairs in ([], [("CarePlan", "r")], [("AuditEvent", "s")]):
        with pytest.raises(FhirError):
            registry.check_partner(pairs, None)


def test_relative_references_are_found_with_their_paths_and_others_are_left_alone() -> None:
    resource = {"resourceType": "QuestionnaireResponse", "subject": {"reference": "Patient/p1"},
                "basedOn": [{"reference": "https://ehr.example.org/fhir/ServiceRequest/s1"},
                            {"reference": "ServiceRequest/s2/_history/3"}],
                "author": {"reference": "#contained"}, "source": {"reference": "urn:uuid:1234"},
                "item": [{"answer": [{"valueReference": {"reference": "Observation/o1"}}]}]}
    assert list(references(resource, "QuestionnaireResponse")) == [
        ("QuestionnaireResponse.subject", "Patient/p1"),
        ("QuestionnaireResponse.basedOn[1]", "ServiceRequest/s2/_history/3"),
        ("QuestionnaireResponse.item[0].answer[0].valueReference", "Observation/o1")]
