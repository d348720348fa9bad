"""The 42 CFR Part 2 consent gate (DOMAIN.md 5.3, 5.4) as a pure policy decision point.

may_disclose answers one question: may a resource with these labels go to this recipient for this
purpose now? It is asked at send time, not when the event was created, so a revocation stops
queued deliveries. Reasons are short and carry no PHI: they end up in logs and audit events.
"""
from __future__ import annotations

import calendar
import copy
from dataclasses import dataclass
from datetime import UTC, datetime

from shared import codes
from shared.fhir.labels import add_part2_labels
from shared.fhir.util import ref_id

PART2_POLICY = "42CFRPart2"
LEGAL_PURPOSES = frozenset({"HLEGAL"})  # a legal proceeding needs a 2.64/2.65 court order, never a consent
COUNSELING_NOTES = "PSYTHPN"
# Accepted on input as the code we emit (DOMAIN.md 5.2): legacy ETH means SUD, retired NORDSLCD means NORDSCLCD.
LABEL_ALIASES = {"NORDSLCD": "NORDSCLCD", "ETH": "SUD"}

STATEMENT_2 = "42 CFR part 2 prohibits unauthorized use or disclosure of these records."
STATEMENT_1_OPENING = (
    "This record which has been disclosed to you is protected by Federal confidentiality rules (42 CFR part 2). "
    "These rules prohibit you from using or disclosing this record, or testimony that describes the information "
    "contained in this record, in any civil, criminal, administrative, or legislative proceedings by any Federal, "
    "State, or local authority, against the patient, unless authorized by the consent of the patient, except as "
    "provided at 42 CFR 2.12(c)(5) or as authorized by a court in accordance with 42 CFR 2.64 or 2.65.")


@dataclass(frozen=True)
class Decision:
    permit: bool
    reason: str
    consent_id: str | None = None


@dataclass(frozen=True)
class _Request:
    recipient: str
    purpose: str
    labels: frozenset[tuple[str, str]]
    now: datetime


def may_disclose(consents: list[dict], patient_id: str, recipient: str, purpose: str,
                 resource_labels: list[dict], now: datetime) -> Decision:
    """Permit when any active Part 2 consent of the patient covers the disclosure; deny otherwise."""
    if purpose in LEGAL_PURPOSES:
        return Decision(False, "legal-proceeding use needs a court order")
    patient = patient_id.removeprefix("Patient/")
    own = [c for c in consents if c.get("resourceType") == "Consent" and ref_id(c.get("patient")) == patient]
    if not own:
        return Decision(False, "no consent on file")
    active = [c for c in own if c.get("status") == "active"]
    if not active:
        return Decision(False, "consent inactive or revoked", own[0].get("id"))
    part2 = sorted((c for c in active if _is_part2(c)), key=lambda c: c.get("dateTime", ""), reverse=True)
    if not part2:
        return Decision(False, "no Part 2 consent", active[0].get("id"))
    # Unlabelled IOP data is Part 2 data until shown otherwise (DOMAIN.md 5.4 step 1).
    request = _Request(recipient, purpose, _label_keys(resource_labels or codes.PART2_LABELS), _aware(now))
    decisions = [_evaluate(c, request) for c in part2]
    return next((d for d in decisions if d.permit), decisions[0])


def part2_notice() -> str:
    """The 42 CFR 2.32 notice sent with every disclosure: Statement 2, then the opening of Statement 1."""
    return f"{STATEMENT_2} {STATEMENT_1_OPENING}"


def ensure_labels(resource: dict) -> dict:
    """A copy of the resource whose meta.security keeps its labels and has every Part 2 label."""
    return add_part2_labels(copy.deepcopy(resource))


def _evaluate(consent: dict, request: _Request) -> Decision:
    provision = consent.get("provision") or {}
    checks = (_in_period, _is_permit, _names_recipient, _allows_purpose, _allows_disclosure, _covers_labels,
              _no_deny_applies)
    for check in checks:
        reason = check(provision, request)
        if reason:
            return Decision(False, reason, consent.get("id"))
    return Decision(True, "permitted by consent", consent.get("id"))


def _in_period(provision: dict, request: _Request) -> str | None:
    period = provision.get("period") or {}
    try:
        start, end = _bounds(period.get("start"))[0], _bounds(period.get("end"))[1]
    except (ValueError, OverflowError):
        return "consent period unreadable"
    if start and request.now < start:
        return "consent not yet in effect"
    if end and request.now > end:
        return "consent expired"
    return None


def _is_permit(provision: dict, request: _Request) -> str | None:
    return None if provision.get("type") == "permit" else "consent provision is not a permit"


def _names_recipient(provision: dict, request: _Request) -> str | None:
    # Any actor role counts (IRCP is usual): a Part 2 consent names only parties the patient allows.
    named = any(_is_recipient(actor.get("reference") or {}, request.recipient) for actor in provision.get("actor", []))
    return None if named else "recipient not named in consent"


def _allows_purpose(provision: dict, request: _Request) -> str | None:
    purposes = {p.get("code") for p in provision.get("purpose", []) if p.get("system") in (None, codes.V3_ACT_REASON)}
    return None if request.purpose in purposes else "purpose not permitted by consent"


def _allows_disclosure(provision: dict, request: _Request) -> str | None:
    actions = {c.get("code") for a in provision.get("action", []) for c in a.get("coding", [])}
    return None if not actions or "disclose" in actions else "consent does not permit disclosure"


def _covers_labels(provision: dict, request: _Request) -> str | None:
    covered = _label_keys(provision.get("securityLabel", []))
    if covered and not covered <= request.labels:
        return "resource not covered by consent"
    notes = {key for key in request.labels if key[1] == COUNSELING_NOTES}
    if notes and not notes <= covered:
        return "counseling notes need their own consent"  # 2024 rule: a separate consent, never the TPO one
    return None


def _no_deny_applies(provision: dict, request: _Request) -> str | None:
    denies = [p for p in provision.get("provision", []) if p.get("type") == "deny"]
    return "excluded by a deny provision" if any(_deny_applies(d, request) for d in denies) else None


def _deny_applies(deny: dict, request: _Request) -> bool:
    """A nested deny applies when every constraint it states matches (R4: labels must all be present)."""
    labels = _label_keys(deny.get("securityLabel", []))
    return (labels <= request.labels
            and (not deny.get("actor") or _names_recipient(deny, request) is None)
            and (not deny.get("purpose") or _allows_purpose(deny, request) is None)
            and (not deny.get("period") or _in_period(deny, request) is None))


def _is_recipient(reference: dict, recipient: str) -> bool:
    if "|" in recipient:
        system, value = recipient.split("|", 1)
        identifier = reference.get("identifier") or {}
        return identifier.get("system") == system and identifier.get("value") == value
    return bool(reference.get("reference")) and _tail(reference["reference"]) == _tail(recipient)


def _tail(reference: str) -> str:
    """"Type/id" of a relative or absolute reference, without a version."""
    return "/".join(reference.split("/_history/")[0].rstrip("/").split("/")[-2:])


def _is_part2(consent: dict) -> bool:
    rules = (consent.get("policyRule") or {}).get("coding", [])
    by_rule = any(c.get("code") == PART2_POLICY and c.get("system") in (None, codes.V3_ACT_CODE) for c in rules)
    return by_rule or any("part-2" in (p.get("uri") or "").lower() for p in consent.get("policy", []))


def _label_keys(labels: list[dict]) -> frozenset[tuple[str, str]]:
    return frozenset((label.get("system", ""), LABEL_ALIASES.get(label.get("code", ""), label.get("code", "")))
                     for label in labels)


def _bounds(value: str | None) -> tuple[datetime | None, datetime | None]:
    """First and last instant a FHIR date or dateTime covers; dates are read as UTC days."""
    if not value:
        return None, None
    if "T" in value:
        moment = _aware(datetime.fromisoformat(value))
        return moment, moment
    parts = [int(p) for p in value.split("-")]
    year, month, day = parts + [1] * (3 - len(parts))
    start = datetime(year, month, day, tzinfo=UTC)
    # The last instant is built, not reached by adding a day: 9999-12-31 has no following day to subtract from.
    last_month = month if len(parts) >= 2 else 12
    last_day = day if len(parts) == 3 else calendar.monthrange(year, last_month)[1]
    return start, datetime(year, last_month, last_day, 23, 59, 59, 999999, tzinfo=UTC)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
