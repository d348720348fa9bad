"""What careplan reads from intake's assessment Bundles (`iop.intake.assessed`, `iop.assessment.completed`).

The Bundle is intake's contract: the QuestionnaireResponse first, then the Patient, the score Observations and, for
an intake, the level-of-care recommendation Observation with its finding components (shared/codes.py names them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared import codes
from shared.fhir.util import ref_id

WEEK_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SCORE_CODES = frozenset({codes.PHQ9_TOTAL, codes.GAD7_TOTAL, codes.AUDITC_TOTAL, codes.DAST10_TOTAL, codes.CSSRS_RISK})
SYMPTOM_CUT_OFF = 10  # PHQ-9 and GAD-7: moderate symptoms and the usual positive screen (DOMAIN.md 1.1, 1.2)
DRUG_USE_POSITIVE = frozenset({"moderate", "substantial", "severe"})  # DAST-10 >= 3; "low" (1-2) is monitored only
# A score that was withdrawn must not drive a plan or a goal.
_WITHDRAWN = frozenset({"entered-in-error", "cancelled"})


class AssessmentBundleError(ValueError):
    """The Bundle does not carry what the careplan service needs from an assessment."""


@dataclass(frozen=True)
class Scores:
    """The scored instruments of one QuestionnaireResponse (an intake or a re-assessment)."""

    patient_id: str
    questionnaire_response_id: str
    scores: dict[str, int]             # LOINC total code -> valueInteger
    observation_ids: dict[str, str]    # LOINC total code -> Observation id


@dataclass(frozen=True)
class Assessment:
    """An intake assessment with intake's level-of-care recommendation and findings."""

    patient_id: str
    questionnaire_response_id: str
    level: str
    disposition: str
    scores: dict[str, int]
    family_involvement: bool = False
    trauma_positive: bool = False
    alcohol_use_positive: bool = False
    drug_use_level: str | None = None  # the DAST-10 band: none, low, moderate, substantial, severe
    preferred_days: list[str] = field(default_factory=list)
    safety_alert: bool = False
    reasons: list[str] = field(default_factory=list)
    recommendation_id: str = ""
    observation_ids: list[str] = field(default_factory=list)

    @property
    def depressive_symptoms(self) -> bool:
        return self.scores.get(codes.PHQ9_TOTAL, 0) >= SYMPTOM_CUT_OFF

    @property
    def anxiety_symptoms(self) -> bool:
        return self.scores.get(codes.GAD7_TOTAL, 0) >= SYMPTOM_CUT_OFF

    @property
    def drug_use_positive(self) -> bool:
        return self.drug_use_level in DRUG_USE_POSITIVE

    @property
    def substance_use(self) -> bool:
        return self.alcohol_use_positive or self.drug_use_positive


def scores_from_bundle(bundle: dict[str, Any]) -> Scores:
    """The scores of a re-assessment (`iop.assessment.completed`) or of an intake."""
    resources = _resources(bundle)
    response = resources[0]
    if response.get("resourceType") != "QuestionnaireResponse":
        raise AssessmentBundleError("the first entry of an assessment Bundle must be the QuestionnaireResponse")
    scores: dict[str, int] = {}
    ids: dict[str, str] = {}
    for obs in _observations(resources):
        code = _score_code(obs)
        if code and isinstance(obs.get("valueInteger"), int):
            scores[code], ids[code] = obs["valueInteger"], obs.get("id", "")
    return Scores(_patient_id(resources, response), response.get("id", ""), scores, ids)


def assessment_from_bundle(bundle: dict[str, Any]) -> Assessment:
    """The intake assessment; raises AssessmentBundleError when the recommendation is missing."""
    scored = scores_from_bundle(bundle)
    observations = _observations(_resources(bundle))
    recommendation = next((o for o in observations if _has_code(o, codes.IOP_OBSERVATION, codes.RECOMMENDATION_CODE)),
                          None)
    if recommendation is None:
        raise AssessmentBundleError(
            f"the assessment Bundle has no recommendation Observation ({codes.IOP_OBSERVATION}|"
            f"{codes.RECOMMENDATION_CODE}); without it no level of care can be planned")
    findings = _findings(recommendation)
    return Assessment(
        patient_id=scored.patient_id, questionnaire_response_id=scored.questionnaire_response_id,
        level=_code_in(recommendation.get("valueCodeableConcept"), codes.ASAM_LEVEL) or "",
        disposition=_code_in(_first(findings, "disposition", "valueCodeableConcept"), codes.IOP_DISPOSITION) or "",
        scores=scored.scores,
        family_involvement=_first(findings, "family-involvement", "valueBoolean") is True,
        trauma_positive=_first(findings, "trauma-positive", "valueBoolean") is True,
        alcohol_use_positive=_first(findings, "alcohol-use-positive", "valueBoolean") is True,
        drug_use_level=_first(findings, "drug-use-level", "valueString"),
        preferred_days=parse_days(_first(findings, "preferred-days", "valueString") or ""),
        safety_alert=_first(findings, "safety-alert", "valueBoolean") is True,
        reasons=[c["valueString"] for c in findings.get("reason", []) if "valueString" in c],
        recommendation_id=recommendation.get("id", ""),
        observation_ids=[o["id"] for o in observations if "id" in o])


def is_iop_admission(assessment: Assessment) -> bool:
    """Admit to IOP only when intake recommends IOP at ASAM 2.1 and raised no safety alert (DOMAIN.md 2.3)."""
    return assessment.disposition == "iop" and assessment.level == "2.1" and not assessment.safety_alert


def parse_days(text: str) -> list[str]:
    """"mon,wed,fri" -> ["mon", "wed", "fri"], in week order; unknown names are dropped, not guessed."""
    wanted = {part.strip().lower()[:3] for part in text.split(",")}
    return [day for day in WEEK_DAYS if day in wanted]


def _resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    if bundle.get("resourceType") != "Bundle":
        raise AssessmentBundleError("an assessment event must carry a FHIR Bundle")
    resources = [e["resource"] for e in bundle.get("entry", []) if isinstance(e.get("resource"), dict)]
    if not resources:
        raise AssessmentBundleError("the assessment Bundle has no entries")
    return resources


def _observations(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in resources if r.get("resourceType") == "Observation" and r.get("status") not in _WITHDRAWN]


def _patient_id(resources: list[dict[str, Any]], response: dict[str, Any]) -> str:
    patient = next((r for r in resources if r.get("resourceType") == "Patient"), None)
    patient_id = patient.get("id") if patient else ref_id(response.get("subject"))
    if not patient_id:
        raise AssessmentBundleError("the assessment Bundle names no Patient (no Patient entry, no QR subject)")
    return patient_id


def _score_code(observation: dict[str, Any]) -> str | None:
    return next((c["code"] for c in observation.get("code", {}).get("coding", [])
                 if c.get("system") == codes.LOINC and c.get("code") in SCORE_CODES), None)


def _has_code(element: dict[str, Any] | None, system: str, code: str) -> bool:
    return _code_in((element or {}).get("code"), system) == code


def _code_in(concept: dict[str, Any] | None, system: str) -> str | None:
    return next((c.get("code") for c in (concept or {}).get("coding", []) if c.get("system") == system), None)


def _findings(recommendation: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Components grouped by their IOP_FINDING code (a finding such as "reason" repeats)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for component in recommendation.get("component", []):
        code = _code_in(component.get("code"), codes.IOP_FINDING)
        if code:
            grouped.setdefault(code, []).append(component)
    return grouped


def _first(findings: dict[str, list[dict[str, Any]]], code: str, value_key: str) -> Any:
    return next((c[value_key] for c in findings.get(code, []) if value_key in c), None)
