"""Step 1 of care: an intake response is validated, scored and triaged as it is stored.

SubmitIntake runs inside the store transaction that stores the QuestionnaireResponse, so the
response, its score Observations, the recommendation, a safety Flag and the events about
them commit together or not at all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.intake import observations, scoring, triage
from services.intake.qr_validation import validate_response
from services.intake.questionnaires import IOP_INTAKE_URL, answers_by_link_id, find_questionnaire, load_catalogue
from shared.config import Settings
from shared.events.outbox import Outbox
from shared.events.worker import WorkerSpec
from shared.fhir.outcome import FhirError, Issue
from shared.fhir.registry import Repository
from shared.fhir.store import Store, Stored, Transaction, open_store
from shared.fhir.util import now_instant, ref_id
from shared.logs import get_logger

log = get_logger("iop.intake")
SCORED = {"completed", "amended"}


@dataclass
class Assessment:
    """What scoring and triage made of one response."""

    scores: list[Stored]
    recommendation: Stored | None
    flag: Stored | None


class IntakeHandlers:
    def __init__(self, repo: Repository, outbox: Outbox, catalogue: dict[str, dict] | None = None) -> None:
        self.repo, self.outbox = repo, outbox
        self.catalogue = catalogue or load_catalogue()

    # -- before the response is stored ---------------------------------------------------------
    def check_response(self, tx: Transaction, qr: dict, previous: Stored | None) -> None:
        """Refuse a response that its Questionnaire would not accept, or whose patient is unknown."""
        canonical = qr.get("questionnaire")
        questionnaire = find_questionnaire(self.catalogue, canonical) if canonical else None
        if questionnaire is None:
            raise FhirError.single(422, "questionnaire must name one of the Questionnaires this service serves "
                                        "(GET /fhir/Questionnaire)", expression="QuestionnaireResponse.questionnaire")
        issues = validate_response(qr, questionnaire)
        patient_id = ref_id(qr.get("subject"))
        if not (qr.get("subject", {}).get("reference", "").startswith("Patient/") and patient_id
                and (p := tx.read("Patient", patient_id)) is not None and not p.deleted):
            issues.append(Issue("subject must reference a Patient known to this service", code="invalid",
                                expression="QuestionnaireResponse.subject"))
        if issues:
            raise FhirError(422, issues)

    # -- after it is stored --------------------------------------------------------------------
    def on_response(self, tx: Transaction, qr: Stored, previous: Stored | None) -> None:
        patient_id = ref_id(qr.resource["subject"]) or ""
        patient = tx.read("Patient", patient_id)
        if patient is None:  # check_response refuses this before the write; kept for writes that skip it
            raise FhirError.single(422, "subject must reference a known Patient",
                                   expression="QuestionnaireResponse.subject")
        is_intake = qr.resource["questionnaire"].partition("|")[0] == IOP_INTAKE_URL
        if previous is None and is_intake:
            self._received(tx, qr, patient)
        already_scored = previous is not None and previous.resource.get("status") in SCORED
        if qr.resource["status"] not in SCORED or already_scored:
            return
        assessment = self.assess(tx, qr, patient, is_intake)
        context = [r.resource for r in (*assessment.scores, assessment.recommendation, assessment.flag) if r]
        self.outbox.emit(tx, "iop.intake.assessed" if is_intake else "iop.assessment.completed", patient_id, qr,
                         ([patient.resource] if is_intake else []) + context)
        if assessment.flag:
            self.outbox.emit(tx, "iop.intake.safety-alert", patient_id, assessment.flag,
                             [qr.resource, *(s.resource for s in assessment.scores)])
            log.warning("safety alert raised", flag_id=assessment.flag.id, patient_id=patient_id,
                        questionnaire_response_id=qr.id)
        log.info("response assessed", questionnaire_response_id=qr.id, patient_id=patient_id,
                 recommendation=assessment.recommendation.resource["valueCodeableConcept"]["coding"][0]["code"]
                 if assessment.recommendation else None, scores=len(assessment.scores))

    def _received(self, tx: Transaction, qr: Stored, patient: Stored) -> None:
        context: list[dict[str, Any]] = [patient.resource]
        for based_on in qr.resource.get("basedOn", []):
            if based_on.get("reference", "").startswith("ServiceRequest/"):
                if (sr := tx.read("ServiceRequest", ref_id(based_on))) is not None:
                    context.append(sr.resource)
        self.outbox.emit(tx, "iop.intake.received", patient.id, qr, context)

    def assess(self, tx: Transaction, qr: Stored, patient: Stored, is_intake: bool) -> Assessment:
        answers = answers_by_link_id(qr.resource)
        sex = scoring.administrative_sex(answers) or patient.resource.get("gender")
        scores = scoring.score_intake(answers, sex)
        ctx = observations.ObservationContext(f"Patient/{patient.id}", f"QuestionnaireResponse/{qr.id}",
                                              qr.resource.get("authored") or now_instant())
        stored = [self.repo.create(tx, obs, validated=True) for obs in observations.score_observations(scores, ctx)]
        findings = triage.findings_from_intake(answers, scores)
        recommendation, flag = None, None
        if is_intake:
            rec = triage.recommend_level_of_care(findings)
            recommendation = self.repo.create(tx, observations.recommendation_observation(
                rec, findings, ctx, [f"Observation/{s.id}" for s in stored]), validated=True)
            safety = rec.safety_alert
        else:
            safety = bool(findings.phq9_item9) or findings.cssrs_risk in ("moderate", "high")
        if safety:
            detail = f"Observation/{recommendation.id}" if recommendation else None
            flag = self.repo.create(tx, observations.safety_flag(ctx, detail), validated=True)
        return Assessment(stored, recommendation, flag)


def seed_questionnaires(store: Store, repo: Repository, catalogue: dict[str, dict]) -> None:
    """Serve the catalogue read-only: store each Questionnaire once, again only when its file changed."""
    with store.transaction() as tx:
        for questionnaire in catalogue.values():
            current = tx.read("Questionnaire", questionnaire["id"])
            unchanged = current and {k: v for k, v in current.resource.items() if k not in ("meta",)} == {
                k: v for k, v in questionnaire.items() if k != "meta"}
            if not unchanged:
                repo.update(tx, "Questionnaire", questionnaire["id"], questionnaire, validated=True)


def worker_spec(settings: Settings) -> WorkerSpec:
    """Intake consumes nothing: its worker relays the outbox."""
    return WorkerSpec(settings, open_store(settings.database))
