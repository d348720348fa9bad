"""Step 5 of care: graduation becomes a step-down plan, check-ins are tracked, changes are queued for EHRs.

Every handler runs in the consumer's store transaction. Deliveries are only queued here; the
dispatcher (delivery.py) sends them, checking consent at send time.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from services.aftercare import checkins, step_down
from services.aftercare.subscriptions import TOPICS_BY_EVENT, matches, parse_subscription
from shared import codes, tracing
from shared.events.envelope import Event
from shared.events.outbox import Outbox
from shared.fhir.registry import Repository
from shared.fhir.store import Stored, Transaction
from shared.fhir.util import ref_id
from shared.logs import get_logger

log = get_logger("iop.aftercare")


def checkin_key(careplan_id: str) -> str:
    return f"checkins:{careplan_id}"


def plan_key(patient_id: str) -> str:
    return f"aftercare-plan:{patient_id}"


def identifiers_key(patient_id: str) -> str:
    return f"patient-identifiers:{patient_id}"


class AftercareHandlers:
    def __init__(self, repo: Repository, outbox: Outbox, clock: Callable[[], datetime] | None = None,
                 options: step_down.StepDownOptions | None = None) -> None:
        self.repo, self.outbox = repo, outbox
        self.clock = clock or (lambda: datetime.now(UTC))
        self.options = options or step_down.StepDownOptions()

    # -- graduation → step-down plan -----------------------------------------------------------
    def on_graduated(self, tx: Transaction, event: Event) -> None:
        iop_plan, patient_id = event.focus, event.key
        ids = step_down.StepDownIds.derived(iop_plan["id"])
        if tx.read("CarePlan", ids.careplan) is not None:
            return  # this graduation already has its aftercare plan
        graduation_day = _day((iop_plan.get("period") or {}).get("end")) or self.clock().date()
        plan = step_down.step_down_plan(iop_plan, event.of_type("Goal"), ids, graduation_day, self.options)
        goals = [self.repo.create(tx, g, rid=g["id"], validated=True) for g in plan.goals]
        referrals = [self.repo.create(tx, r, rid=r["id"], validated=True) for r in plan.referrals]
        careplan = self.repo.create(tx, plan.careplan, rid=ids.careplan, validated=True)
        tx.put_value(checkin_key(careplan.id), json.dumps([c.to_dict() for c in plan.checkins]))
        tx.put_value(plan_key(patient_id), careplan.id)
        self.outbox.emit(tx, "iop.aftercare.planned", patient_id, careplan,
                         [*(r.resource for r in referrals), *(g.resource for g in goals)])
        log.info("aftercare planned", careplan_id=careplan.id, patient_id=patient_id, referrals=len(referrals))

    # -- check-ins -----------------------------------------------------------------------------
    def on_checkin_evidence(self, tx: Transaction, event: Event) -> None:
        """A finished check-in session or a re-assessment completes the check-in due that day."""
        focus = event.focus
        if focus["resourceType"] == "Encounter":
            kinds = {(c.get("system"), c.get("code")) for t in focus.get("type", []) for c in t.get("coding", [])}
            if focus.get("status") != "finished" or not kinds & codes.CHECKIN_CODES:
                return
            day = _day((focus.get("period") or {}).get("start"))
        else:
            day = _day(focus.get("authored"))
        careplan_id = tx.get_value(plan_key(event.key))
        if careplan_id is None or day is None:
            return
        schedule = self._schedule(tx, careplan_id)
        updated = checkins.complete_checkin(schedule, day)
        if updated != schedule:
            tx.put_value(checkin_key(careplan_id), json.dumps([c.to_dict() for c in updated]))
            log.info("check-in completed", careplan_id=careplan_id, day=day.isoformat())

    def sweep_missed(self, tx: Transaction, today: date) -> int:
        """Raise iop.aftercare.checkin-missed once for each check-in whose window has passed unmet."""
        raised = 0
        for name, _ in tx.values_with_prefix("checkins:"):
            careplan_id = name.removeprefix("checkins:")
            schedule = self._schedule(tx, careplan_id)
            missed = checkins.missed_checkins(schedule, today)
            careplan = tx.read("CarePlan", careplan_id)
            if not missed or careplan is None or careplan.resource.get("status") != "active":
                continue
            tx.put_value(name, json.dumps([c.to_dict() for c in checkins.mark_missed(schedule, today)]))
            for item in missed:
                self.outbox.emit(tx, "iop.aftercare.checkin-missed", ref_id(careplan.resource["subject"]) or "",
                                 careplan, [checkin_detail(careplan, item)])
                raised += 1
        return raised

    def _schedule(self, tx: Transaction, careplan_id: str) -> list[checkins.CheckIn]:
        # Held until commit: a sweep and a consumer (on another replica) update one schedule one after the other.
        tx.lock(checkin_key(careplan_id))
        raw = tx.get_value(checkin_key(careplan_id))
        return [checkins.CheckIn.from_dict(d) for d in json.loads(raw)] if raw else []

    # -- what EHR delivery needs to know -------------------------------------------------------
    def on_intake(self, tx: Transaction, event: Event) -> None:
        """Keep the patient's identifiers, so a write-back can name the patient as the EHR knows them."""
        for patient in event.of_type("Patient"):
            if patient.get("identifier"):
                tx.put_value(identifiers_key(patient["id"]), json.dumps(patient["identifier"]))

    def queue_deliveries(self, tx: Transaction, event: Event) -> None:
        """Queue the event for every active subscription whose topic and filter it matches."""
        if event.type not in TOPICS_BY_EVENT:
            return
        for sid in tx.find_ids("Subscription", "status", None, "active"):
            sub = tx.read("Subscription", sid)
            spec = parse_subscription(sub.resource) if sub and not sub.deleted else None
            if spec is None or isinstance(spec, list) or not matches(spec, event.type, event.key):
                continue
            tx.enqueue(f"sub:{sid}", {"kind": "event", "type": event.type, "patient": event.key, "ce_id": event.id,
                                      "time": event.time, "focus": event.subject,
                                      "source_base": _source_base(event), "resources": event.resources,
                                      "traceparent": tracing.traceparent()})

    def handle(self, tx: Transaction, event: Event) -> None:
        """One entry point per event type: its own effect, then the EHR deliveries it causes."""
        effect = {"iop.careplan.graduated": self.on_graduated, "iop.encounter.finished": self.on_checkin_evidence,
                  "iop.assessment.completed": self.on_checkin_evidence,
                  "iop.intake.received": self.on_intake}.get(event.type)
        if effect is not None:
            effect(tx, event)
        self.queue_deliveries(tx, event)


def checkin_detail(careplan: Stored, item: checkins.CheckIn) -> dict[str, Any]:
    """A Parameters entry naming which check-in was missed (the event's focus is the aftercare plan)."""
    return {"resourceType": "Parameters", "id": f"{careplan.id}-missed-{item.due.isoformat()}", "parameter": [
        {"name": "due", "valueDate": item.due.isoformat()},
        {"name": "window-end", "valueDate": item.window_end.isoformat()},
        {"name": "careplan", "valueReference": {"reference": f"CarePlan/{careplan.id}"}}]}


def _source_base(event: Event) -> str | None:
    url = event.bundle["entry"][0].get("fullUrl", "")
    return url.rsplit("/", 2)[0] if url.count("/") >= 2 else None


def _day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value[:10]) if value else None
    except ValueError:
        return None
