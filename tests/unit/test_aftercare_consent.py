"""Given a patient's Part 2 consents, when aftercare wants to disclose to an EHR, then the gate decides."""
import copy
from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.consent import Consent

from services.aftercare.consent import (
    STATEMENT_1_OPENING,
    STATEMENT_2,
    ensure_labels,
    may_disclose,
    part2_notice,
)
from shared import codes

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
EHR = "Organization/ehr-1"
SUD = {"system": codes.V3_ACT_CODE, "code": "SUD"}
PSYTHPN = {"system": codes.V3_ACT_CODE, "code": "PSYTHPN"}


def part2_consent(**changes) -> dict:
    """DOMAIN.md 5.3, the pattern every rule below bends one element of."""
    consent = {
        "resourceType": "Consent", "id": "c1", "status": "active", "dateTime": "2025-03-01",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": codes.LOINC, "code": "64292-6"}]}],
        "patient": {"reference": "Patient/p1"},
        "policyRule": {"coding": [{"system": codes.V3_ACT_CODE, "code": "42CFRPart2"}]},
        "provision": {
            "type": "permit", "period": {"start": "2025-03-01", "end": "2025-12-31"},
            "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                            "code": "IRCP"}]}, "reference": {"reference": EHR}}],
            "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction",
                                    "code": "disclose"}]}],
            "purpose": [{"system": codes.V3_ACT_REASON, "code": c} for c in ("TREAT", "HPAYMT", "HOPERAT")],
            "securityLabel": [SUD],
            "provision": [{"type": "deny", "securityLabel": [PSYTHPN]}]}}
    for path, value in changes.items():
        target = consent
        *parents, leaf = path.split(".")
        for key in parents:
            target = target[key]
        target[leaf] = value
    return consent


def decide(consents, recipient=EHR, purpose="TREAT", labels=codes.PART2_LABELS, now=NOW, patient="p1"):
    return may_disclose(consents, patient, recipient, purpose, labels, now)


def test_the_domain_consent_pattern_is_valid_r4():
    Consent.model_validate(part2_consent())


def test_an_active_part2_consent_permits_treatment_disclosure():
    decision = decide([part2_consent()])
    assert decision.permit and decision.consent_id == "c1"


def test_no_consent_denies():
    assert decide([]).reason == "no consent on file"


def test_another_patients_consent_does_not_count():
    assert not decide([part2_consent()], patient="p2").permit
    assert decide([part2_consent()], patient="Patient/p1").permit


@pytest.mark.parametrize("status", ["inactive", "rejected", "draft", "proposed", "entered-in-error"])
def test_inactive_or_revoked_consent_denies(status):
    decision = decide([part2_consent(status=status)])
    assert not decision.permit and decision.reason == "consent inactive or revoked"


def test_consent_must_be_a_part2_consent():
    consent = part2_consent(policyRule={"coding": [{"system": codes.V3_ACT_CODE, "code": "HIPAAAuth"}]})
    assert decide([consent]).reason == "no Part 2 consent"


def test_a_part2_policy_uri_is_enough():
    consent = part2_consent(policy=[{"uri": "https://www.ecfr.gov/current/title-42/chapter-I/subchapter-A/part-2"}])
    del consent["policyRule"]
    assert decide([consent]).permit


@pytest.mark.parametrize(("now", "reason"), [
    (datetime(2025, 2, 28, 23, 59, tzinfo=UTC), "consent not yet in effect"),
    (datetime(2026, 1, 1, 0, 0, tzinfo=UTC), "consent expired"),
])
def test_consent_period_must_cover_now(now, reason):
    assert decide([part2_consent()], now=now).reason == reason


def test_the_last_day_of_the_period_is_covered():
    assert decide([part2_consent()], now=datetime(2025, 12, 31, 23, 59, tzinfo=UTC)).permit


def test_open_ended_and_datetime_periods():
    open_ended = part2_consent(**{"provision.period": {"start": "2025-03-01"}})
    assert decide([open_ended], now=datetime(2030, 1, 1, tzinfo=UTC)).permit
    timed = part2_consent(**{"provision.period": {"start": "2025-03-01T09:00:00Z", "end": "2025-06-01T11:00:00Z"}})
    assert decide([timed]).reason == "consent expired"
    assert decide([part2_consent(**{"provision.period": {"end": "2025-05"}})]).reason == "consent expired"
    assert decide([part2_consent(**{"provision.period": {"end": "2025"}})]).permit


@pytest.mark.parametrize("end", ["9999-12-31", "9999-12", "9999", "9999-12-31T23:59:59+14:00",
                                 "9999-12-31T23:59:59-14:00"])
def test_a_period_ending_at_the_calendars_edge_is_open_ended(end):
    assert decide([part2_consent(**{"provision.period": {"start": "2025-03-01", "end": end}})]).permit


def test_a_period_at_the_calendars_start_has_ended():
    consent = part2_consent(**{"provision.period": {"start": "0001-01-01T00:00:00+14:00", "end": "0001-01-02"}})
    assert decide([consent]).reason == "consent expired"


def test_naive_now_is_read_as_utc():
    assert decide([part2_consent()], now=datetime(2025, 6, 1, 12, 0)).permit


def test_unreadable_period_denies():
    assert decide([part2_consent(**{"provision.period": {"end": "someday"}})]).reason == "consent period unreadable"


def test_a_deny_provision_at_the_root_denies():
    assert decide([part2_consent(**{"provision.type": "deny"})]).reason == "consent provision is not a permit"


def test_recipient_must_be_named():
    assert decide([part2_consent()], recipient="Organization/other").reason == "recipient not named in consent"


def test_recipient_matches_absolute_and_identifier_references():
    absolute = part2_consent(**{"provision.actor": [{"role": {"text": "recipient"},
                                                     "reference": {"reference": "https://x.org/fhir/Organization/ehr-1"}}]})
    assert decide([absolute]).permit
    by_identifier = part2_consent(**{"provision.actor": [{"role": {"text": "recipient"}, "reference": {
        "identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}}}]})
    assert decide([by_identifier], recipient="http://hl7.org/fhir/sid/us-npi|1234567893").permit
    assert not decide([by_identifier], recipient="http://hl7.org/fhir/sid/us-npi|999").permit


@pytest.mark.parametrize("purpose", ["ETREAT", "HRESCH", "HMARKT"])
def test_purpose_must_be_listed(purpose):
    assert decide([part2_consent()], purpose=purpose).reason == "purpose not permitted by consent"


def test_legal_proceedings_are_never_permitted_by_consent():
    consent = part2_consent(**{"provision.purpose": [{"system": codes.V3_ACT_REASON, "code": "HLEGAL"}]})
    decision = decide([consent], purpose="HLEGAL")
    assert not decision.permit and "court order" in decision.reason


def test_an_action_other_than_disclose_does_not_permit_disclosure():
    consent = part2_consent(**{"provision.action": [{"coding": [{"code": "access"}]}]})
    assert decide([consent]).reason == "consent does not permit disclosure"


def test_resource_must_carry_the_labels_the_consent_covers():
    bh_only = [{"system": codes.V3_ACT_CODE, "code": "BH"}]
    assert decide([part2_consent()], labels=bh_only).reason == "resource not covered by consent"


def test_legacy_eth_label_counts_as_sud():
    assert decide([part2_consent()], labels=[{"system": codes.V3_ACT_CODE, "code": "ETH"}]).permit


def test_unlabelled_resources_are_treated_as_part2():
    assert decide([part2_consent()], labels=[]).permit


def test_nested_deny_excludes_counseling_notes():
    decision = decide([part2_consent()], labels=[*codes.PART2_LABELS, PSYTHPN])
    assert not decision.permit
    assert decision.reason == "counseling notes need their own consent"


def test_counseling_notes_need_their_own_consent_even_without_a_deny():
    consent = part2_consent()
    del consent["provision"]["provision"]
    assert decide([consent], labels=[*codes.PART2_LABELS, PSYTHPN]).reason == "counseling notes need their own consent"


def test_a_separate_counseling_notes_consent_permits_them():
    notes = part2_consent(id="c-notes", **{"provision.securityLabel": [PSYTHPN], "provision.provision": []})
    decision = decide([part2_consent(), notes], labels=[*codes.PART2_LABELS, PSYTHPN])
    assert decision.permit and decision.consent_id == "c-notes"


def test_nested_deny_on_a_purpose_or_recipient_applies_only_to_it():
    consent = part2_consent(**{"provision.provision": [{"type": "deny", "purpose": [
        {"system": codes.V3_ACT_REASON, "code": "HPAYMT"}]}]})
    assert decide([consent], purpose="TREAT").permit
    assert decide([consent], purpose="HPAYMT").reason == "excluded by a deny provision"


def test_nested_deny_on_a_label_excludes_resources_carrying_it():
    hiv = {"system": codes.V3_ACT_CODE, "code": "HIV"}
    consent = part2_consent(**{"provision.provision": [{"type": "deny", "securityLabel": [hiv]}]})
    assert decide([consent], labels=[*codes.PART2_LABELS, hiv]).reason == "excluded by a deny provision"


def test_nested_deny_on_other_labels_leaves_this_resource_alone():
    consent = part2_consent(**{"provision.provision": [{"type": "deny", "securityLabel": [
        {"system": codes.V3_ACT_CODE, "code": "HIV"}]}]})
    assert decide([consent]).permit


def test_any_permitting_consent_wins_and_reports_the_newest_denial_otherwise():
    expired = part2_consent(id="old", dateTime="2024-01-01", **{"provision.period": {"end": "2024-12-31"}})
    assert decide([expired, part2_consent()]).consent_id == "c1"
    other = part2_consent(id="new", dateTime="2025-05-01", **{"provision.purpose": []})
    decision = decide([expired, other])
    assert (decision.permit, decision.consent_id) == (False, "new")


def test_reasons_carry_no_patient_data():
    for decision in (decide([]), decide([part2_consent()], recipient="Organization/x"), decide([part2_consent()])):
        assert "p1" not in decision.reason and "Patient" not in decision.reason


def test_the_notice_carries_both_part2_statements():
    notice = part2_notice()
    assert notice.startswith("42 CFR part 2 prohibits unauthorized use or disclosure of these records.")
    assert STATEMENT_2 in notice and STATEMENT_1_OPENING in notice
    assert "This record which has been disclosed to you is protected by Federal confidentiality rules" in notice


def test_ensure_labels_adds_missing_part2_labels_and_keeps_others():
    resource = {"resourceType": "Goal", "meta": {"security": [{"system": codes.V3_ACT_CODE, "code": "SUD"},
                                                              {"system": codes.V3_ACT_CODE, "code": "PSY"}]}}
    original = copy.deepcopy(resource)
    labelled = ensure_labels(resource)
    keys = [(s["system"], s["code"]) for s in labelled["meta"]["security"]]
    assert keys[:2] == [(codes.V3_ACT_CODE, "SUD"), (codes.V3_ACT_CODE, "PSY")]
    assert set(keys) == {(s["system"], s["code"]) for s in codes.PART2_LABELS} | {(codes.V3_ACT_CODE, "PSY")}
    assert len(keys) == len(set(keys))
    assert resource == original


def test_ensure_labels_on_a_resource_without_meta():
    assert ensure_labels({"resourceType": "Goal"})["meta"]["security"] == codes.PART2_LABELS
