"""Steps 2 to 5 of care as the careplan service lives them: draft, progress, revision, graduation.

Event handlers run inside the consumer's store transaction (effect + applied ce_id commit
together); REST rules run inside the request's transaction. Each writes through the
Repository, so events leave through the outbox in the same commit.
"""
from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from services.careplan import graduation, plan_rules, progress
from services.careplan.assessment import assessment_from_bundle, is_iop_admission, scores_from_bundle
from shared import codes
from shared.config import Settings
from shared.events.catalogue import ENCOUNTER, INTAKE
from shared.events.envelope import Event
from shared.events.outbox import Outbox
from shared.events.worker import WorkerSpec
from shared.fhir.interactions import FhirApi
from shared.fhir.outcome import FhirError
from shared.fhir.registry import Repository
from shared.fhir.store import Stored, Transaction, open_store
from shared.fhir.util import now_instant, ref_id
from shared.logs import get_logger

log = get_logger("iop.careplan")
# True while the service itself records progress: only a clinician's change is a revision.
recording_progress: ContextVar[bool] = ContextVar("recording_progress", default=False)


class CarePlanHandlers:
    def __init__(self, repo: Repository, outbox: Outbox, clock: Callable[[], datetime] | None = None) -> None:
        self.repo, self.outbox = repo, outbox
        self.clock = clock or (lambda: datetime.now(UTC))

    # -- step 1 → 2: an assessment recommends IOP ----------------------------------------------
    def on_intake_assessed(self, tx: Transaction, event: Event) -> None:
        assessment = assessment_from_bundle(event.bundle)
        if not is_iop_admission(assessment):
            log.info("no IOP plan: not an IOP admission", patient_id=assessment.patient_id,
                     disposition=assessment.disposition, care_level=assessment.level)
            return
        ids = plan_rules.PlanIds.derived_from(assessment.questionnaire_response_id)
        if tx.read("CarePlan", ids.careplan) is not None:
            return  # this intake already has its plan (a redelivery with a new ce_id)
        draft = plan_rules.draft_plan(assessment, self.clock().date(), ids)
        episode = self.repo.create(tx, draft.episode, rid=ids.episode, validated=True)
        goals = [self.repo.create(tx, g, rid=g["id"], validated=True) for g in draft.goals]
        careplan = self.repo.create(tx, draft.careplan, rid=ids.careplan, validated=True)
        self.outbox.emit(tx, "iop.careplan.created", assessment.patient_id, careplan,
                         [*(g.resource for g in goals), episode.resource])
        log.info("careplan drafted", careplan_id=careplan.id, patient_id=assessment.patient_id, goals=len(goals))

    # -- steps 2-4: sessions move attendance ---------------------------------------------------
    def on_encounter(self, tx: Transaction, event: Event) -> None:
        session = progress.session_outcome(event.focus)
        careplan = self._plan_for(tx, session.careplan_id, event.key)
        if careplan is None:
            log.info("session for a patient without an active plan", encounter_id=session.encounter_id)
            return
        updated, signals = progress.apply_session_outcome(careplan.resource, session)
        if updated is not careplan.resource:
            stored = self._record(tx, "CarePlan", careplan.id, updated)
            self._adjust(tx, stored, signals, event.key)

    # -- step 4: re-assessments move goals -----------------------------------------------------
    def on_assessment_completed(self, tx: Transaction, event: Event) -> None:
        scores = scores_from_bundle(event.bundle)
        careplan = self._plan_for(tx, None, scores.patient_id)
        if careplan is None:
            return
        goals = [g.resource for g in self._goals(tx, careplan.resource)]
        changed, signals = progress.update_goals(goals, scores.scores)
        for goal in changed:
            stored = self._record(tx, "Goal", goal["id"], goal)
            self.outbox.emit(tx, "iop.goal.updated", scores.patient_id, stored)
        self._adjust(tx, careplan, signals, scores.patient_id)

    def _adjust(self, tx: Transaction, careplan: Stored, signals: list[progress.AdjustmentSignal],
                patient_id: str) -> None:
        """A rule calls for a clinician's look: a Task on the care team's list, and a revision event."""
        if not signals:
            return
        tasks = [self.repo.create(tx, review_task(careplan, s, patient_id), validated=True) for s in signals]
        self.outbox.emit(tx, "iop.careplan.revised", patient_id, careplan,
                         [*(g.resource for g in self._goals(tx, careplan.resource)), *(t.resource for t in tasks)])
        log.info("plan review requested", careplan_id=careplan.id, signals=",".join(s.kind for s in signals))

    # -- a clinician's revision ----------------------------------------------------------------
    def check_revision(self, tx: Transaction, careplan: dict, previous: Stored | None) -> None:
        if previous is not None and not recording_progress.get() and careplan.get("status") == "active":
            issues = plan_rules.intensity_issues(careplan)
            if issues:
                raise FhirError(422, issues)

    def on_careplan_written(self, tx: Transaction, stored: Stored, previous: Stored | None) -> None:
        if previous is None or recording_progress.get():
            return
        patient_id = ref_id(stored.resource.get("subject")) or ""
        self.outbox.emit(tx, "iop.careplan.revised", patient_id, stored,
                         [g.resource for g in self._goals(tx, stored.resource)])
        log.info("careplan revised", careplan_id=stored.id, version=stored.version)

    # -- step 5: graduation --------------------------------------------------------------------
    def graduate(self, api: FhirApi, rid: str | None, body: dict | None, **_: Any) -> tuple[int, dict]:
        override = override_reason(body)
        with api.store.transaction() as tx:
            careplan = tx.read("CarePlan", rid or "")
            if careplan is None or careplan.deleted:
                raise FhirError.single(404, f"CarePlan/{rid} is not known", code="not-found")
            goals = [g.resource for g in self._goals(tx, careplan.resource)]
            decision = graduation.check_graduation(careplan.resource, goals,
                                                   progress.attendance_rate(careplan.resource), override,
                                                   today=self.clock().date())
            if not decision.eligible:
                raise FhirError(422, decision.failed)
            episode = self._episode(tx, careplan.resource)
            done = graduation.graduate(careplan.resource, episode.resource if episode else {}, goals, self.clock(),
                                       decision.override_reason)
            stored_goals = [self._record(tx, "Goal", g["id"], g) for g in done.goals]
            context = [g.resource for g in stored_goals]
            if episode is not None:
                context.append(self._record(tx, "EpisodeOfCare", episode.id, done.episode).resource)
            stored = self._record(tx, "CarePlan", careplan.id, done.careplan)
            patient_id = ref_id(stored.resource.get("subject")) or ""
            self.outbox.emit(tx, "iop.careplan.graduated", patient_id, stored, context)
        log.info("patient graduated", careplan_id=stored.id, patient_id=patient_id,
                 override=decision.override_reason is not None)
        return 200, stored.resource

    # -- reading what the plan needs -----------------------------------------------------------
    def _record(self, tx: Transaction, rtype: str, rid: str, resource: dict) -> Stored:
        token = recording_progress.set(True)
        try:
            return self.repo.update(tx, rtype, rid, resource, validated=True)
        finally:
            recording_progress.reset(token)

    def _plan_for(self, tx: Transaction, careplan_id: str | None, patient_id: str) -> Stored | None:
        if careplan_id and (plan := tx.read("CarePlan", careplan_id)) is not None and not plan.deleted:
            return plan if plan.resource.get("status") == "active" else None
        plans = [tx.read("CarePlan", i) for i in tx.find_ids("CarePlan", "patient", None, f"Patient/{patient_id}")]
        active = [p for p in plans if p and not p.deleted and p.resource.get("status") == "active"]
        return max(active, key=lambda p: p.last_updated, default=None)

    def _goals(self, tx: Transaction, careplan: dict) -> list[Stored]:
        goals = [tx.read("Goal", ref_id(g) or "") for g in careplan.get("goal", [])]
        return [g for g in goals if g is not None and not g.deleted]

    def _episode(self, tx: Transaction, careplan: dict) -> Stored | None:
        for ident in careplan.get("identifier", []):
            for rid in tx.find_ids("EpisodeOfCare", "identifier", ident.get("system"), ident.get("value", "")):
                return tx.read("EpisodeOfCare", rid)
        return None


def override_reason(body: dict | None) -> str | None:
    """The optional `override-reason` parameter of $graduate (a clinician's reason to graduate anyway)."""
    if not body:
        return None
    if body.get("resourceType") != "Parameters":
        raise FhirError.single(400, "$graduate takes a Parameters resource", code="structure")
    return next((p.get("valueString") for p in body.get("parameter", []) if p.get("name") == "override-reason"),
                None)


def review_task(careplan: Stored, signal: progress.AdjustmentSignal, patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order", "priority": "urgent",
            "meta": plan_rules.labelled(),
            "code": {"coding": [{"system": f"{codes.CODE_BASE}/plan-adjustment", "code": signal.kind}],
                     "text": "Review the IOP plan"},
            "description": signal.reason, "focus": {"reference": f"CarePlan/{careplan.id}"},
            "for": {"reference": f"Patient/{patient_id}"}, "authoredOn": now_instant(),
            "reasonReference": {"reference": signal.focus}}


def worker_spec(settings: Settings, handlers: CarePlanHandlers | None = None) -> WorkerSpec:
    from services.careplan.resources import build_registry

    store = open_store(settings.database)
    h = handlers or CarePlanHandlers(Repository(build_registry(settings)), Outbox(settings.base_url))
    return WorkerSpec(settings, store, topics=[INTAKE, ENCOUNTER], handlers={
        "iop.intake.assessed": h.on_intake_assessed,
        "iop.assessment.completed": h.on_assessment_completed,
        "iop.encounter.finished": h.on_encounter,
        "iop.encounter.cancelled": h.on_encounter,
    })


