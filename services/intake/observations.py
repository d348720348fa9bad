"""FHIR R4 resources derived from a scored intake: score Observations, the recommendation, the safety Flag.

Score Observations claim US Core 6.1.0 screening-assessment (category survey, the LOINC code of the total,
never the panel code; performer the patient, who self-reported; derivedFrom the QuestionnaireResponse) and
carry a generated narrative. The recommendation Observation is a
contract the careplan service reads: its codes come from shared.codes and must not change here. Every
resource carries the 42 CFR Part 2 security labels (DOMAIN.md 5.2). Ids are the caller's to assign.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.intake.scoring import AuditCScore, CssrsScore, IntakeScores, ScreenScore
from services.intake.triage import DISPOSITION_NAMES, LEVEL_NAMES, Findings, Recommendation
from shared import codes
from shared.fhir import uscore

SCORE_BAND = f"{codes.CODE_BASE}/score-band"             # local: severity bands of the screens
CSSRS_RISK_LEVEL = f"{codes.CODE_BASE}/cssrs-risk-level"  # local: none | low | moderate | high
PC_PTSD5_TOTAL = "pc-ptsd-5-total"  # in codes.IOP_OBSERVATION: no verified LOINC total for PC-PTSD-5
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"
DATA_ABSENT_REASON = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
FLAG_DETAIL = "http://hl7.org/fhir/StructureDefinition/flag-detail"
SAFETY_FLAG_TEXT = "Suicide risk: same-day clinician review required"

TOTAL_CODES = {
    "PHQ-9": (codes.LOINC, codes.PHQ9_TOTAL, "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]"),
    "GAD-7": (codes.LOINC, codes.GAD7_TOTAL, "Generalized anxiety disorder 7 item (GAD-7) total score [Reported.PHQ]"),
    "AUDIT-C": (codes.LOINC, codes.AUDITC_TOTAL, "Total score [AUDIT-C]"),
    "DAST-10": (codes.LOINC, codes.DAST10_TOTAL, "Total score [DAST-10]"),
    "PC-PTSD-5": (codes.IOP_OBSERVATION, PC_PTSD5_TOTAL, "Total score [PC-PTSD-5]"),
}
BAND_NAMES = {
    "minimal": "Minimal", "mild": "Mild", "moderate": "Moderate", "moderately-severe": "Moderately severe",
    "severe": "Severe", "none": "None", "low": "Low", "substantial": "Substantial",
    "positive": "Positive screen", "negative": "Negative screen",
}
SCREEN_RESULT = {"positive": ("POS", "Positive"), "negative": ("NEG", "Negative")}
CSSRS_LOINC_ANSWERS = {"low": ("LA9194-7", "Low")}  # the only risk-level answer code confirmed (DOMAIN.md 1.6)


@dataclass(frozen=True)
class ObservationContext:
    patient_ref: str   # "Patient/123" or "urn:uuid:..."
    qr_ref: str        # the QuestionnaireResponse the results derive from
    effective: str     # FHIR dateTime, normally the response's authored time


def score_observations(scores: IntakeScores, ctx: ObservationContext) -> list[dict[str, Any]]:
    """One Observation per administered instrument, C-SSRS risk last."""
    built = [score_observation(score, ctx) for score in scores.screens()]
    return built + ([cssrs_observation(scores.cssrs, ctx)] if scores.cssrs else [])


def score_observation(score: ScreenScore, ctx: ObservationContext) -> dict[str, Any]:
    observation = _survey(TOTAL_CODES[score.instrument], ctx, score.complete)
    observation["valueInteger"] = score.total
    observation["interpretation"] = [_band_concept(score.band)]
    notes = _notes(score)
    if notes:
        observation["note"] = [{"text": note} for note in notes]
    return uscore.narrate(observation)


def cssrs_observation(cssrs: CssrsScore, ctx: ObservationContext) -> dict[str, Any]:
    observation = _survey((codes.LOINC, codes.CSSRS_RISK, "Suicide risk level"), ctx, cssrs.complete)
    coding = [{"system": CSSRS_RISK_LEVEL, "code": cssrs.risk, "display": cssrs.risk.capitalize()}]
    if cssrs.risk in CSSRS_LOINC_ANSWERS:
        code, display = CSSRS_LOINC_ANSWERS[cssrs.risk]
        coding.append({"system": codes.LOINC, "code": code, "display": display})
    observation["valueCodeableConcept"] = {"coding": coding, "text": f"C-SSRS screener: {cssrs.risk} risk"}
    return uscore.narrate(observation)


def recommendation_observation(recommendation: Recommendation, findings: Findings, ctx: ObservationContext,
                               score_refs: Sequence[str] = ()) -> dict[str, Any]:
    """The ASAM level-of-care recommendation, in the fixed shape the careplan service reads."""
    level = recommendation.asam_level
    return {
        "resourceType": "Observation", "meta": _labels(), "status": "final",
        "code": {"coding": [{"system": codes.IOP_OBSERVATION, "code": codes.RECOMMENDATION_CODE,
                             "display": "ASAM recommended level of care"}]},
        "subject": {"reference": ctx.patient_ref}, "effectiveDateTime": ctx.effective,
        "valueCodeableConcept": {"coding": [{"system": codes.ASAM_LEVEL, "code": level,
                                             "display": LEVEL_NAMES[level]}]},
        "derivedFrom": [{"reference": ref} for ref in (ctx.qr_ref, *score_refs)],
        "component": _recommendation_components(recommendation, findings),
    }


def safety_flag(ctx: ObservationContext, detail_ref: str | None = None) -> dict[str, Any]:
    """An active safety Flag; detail_ref (e.g. the recommendation Observation) says why it was raised."""
    flag: dict[str, Any] = {
        "resourceType": "Flag", "meta": _labels(), "status": "active",
        "category": [{"coding": [{"system": FLAG_CATEGORY, "code": "safety", "display": "Safety"}]}],
        "code": {"text": SAFETY_FLAG_TEXT},
        "subject": {"reference": ctx.patient_ref}, "period": {"start": ctx.effective},
    }
    if detail_ref:
        flag["extension"] = [{"url": FLAG_DETAIL, "valueReference": {"reference": detail_ref}}]
    return flag


def _recommendation_components(recommendation: Recommendation, findings: Findings) -> list[dict[str, Any]]:
    disposition = recommendation.disposition
    days = ",".join(findings.preferred_days) or None
    return [
        _component("disposition", valueCodeableConcept={"coding": [
            {"system": codes.IOP_DISPOSITION, "code": disposition, "display": DISPOSITION_NAMES[disposition]}]}),
        *(_component("reason", valueString=reason) for reason in recommendation.reasons),
        _component("asam-edition", valueString=codes.ASAM_EDITION),
        _component("family-involvement", valueBoolean=findings.family_involvement),
        _component("trauma-positive", valueBoolean=findings.trauma_positive),
        _component("alcohol-use-positive", valueBoolean=findings.audit_c_positive),
        _component("drug-use-level", valueString=findings.dast10_band),
        _component("preferred-days", valueString=days),
        _component("safety-alert", valueBoolean=recommendation.safety_alert),
    ]


def _component(code: str, **value: Any) -> dict[str, Any]:
    """A finding; one that is unknown (screen not given, question not answered) gets a dataAbsentReason."""
    component: dict[str, Any] = {"code": {"coding": [{"system": codes.IOP_FINDING, "code": code}]}}
    (key, given), = value.items()
    if given is None:
        component["dataAbsentReason"] = {"coding": [{"system": DATA_ABSENT_REASON, "code": "unknown"}]}
    else:
        component[key] = given
    return component


def _survey(code: tuple[str, str, str], ctx: ObservationContext, complete: bool) -> dict[str, Any]:
    system, value, display = code
    return {
        "resourceType": "Observation", "meta": {**_labels(), "profile": [uscore.SCREENING_ASSESSMENT]},
        "status": "final" if complete else "preliminary",  # a partly answered screen is not a final score
        "category": [{"coding": [{"system": codes.OBSERVATION_CATEGORY, "code": "survey", "display": "Survey"}]}],
        "code": {"coding": [{"system": system, "code": value, "display": display}], "text": display},
        "subject": {"reference": ctx.patient_ref}, "effectiveDateTime": ctx.effective,
        "performer": [{"reference": ctx.patient_ref}],  # the screens are self-report: the patient answered them
        "derivedFrom": [{"reference": ctx.qr_ref}],
    }


def _band_concept(band: str) -> dict[str, Any]:
    coding = [{"system": SCORE_BAND, "code": band, "display": BAND_NAMES[band]}]
    if band in SCREEN_RESULT:
        code, display = SCREEN_RESULT[band]
        coding.append({"system": V3_INTERPRETATION, "code": code, "display": display})
    return {"coding": coding, "text": BAND_NAMES[band]}


def _notes(score: ScreenScore) -> list[str]:
    notes = []
    if score.missing:
        notes.append(f"Incomplete: {len(score.missing)} item(s) not answered; the total counts answered items only")
    if isinstance(score, AuditCScore):
        notes.append(f"Positive at {score.cut_off} or more (4 for men, 3 for women; 3 when sex is not male)")
        if score.points_only_from_q1:
            notes.append("All points come from question 1: likely drinking below recommended limits "
                         "(PMID 12695273); review recent intake")
    return notes


def _labels() -> dict[str, Any]:
    return {"security": [dict(label) for label in codes.PART2_LABELS]}
