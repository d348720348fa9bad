"""Steps 2 and 3 of care: the sessions a plan schedules, and what happened at each.

Plan events generate and reconcile the planned Encounters for the coming weeks, and a clock-driven
job rolls each active plan's window forward as days pass (a graduated plan's planned sessions are
cancelled). Every status change of an Encounter (REST or generated) is checked against the session
workflow and announced on iop.encounter.events in the same transaction.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from services.encounters import schedule, sessions, workflow
from shared.config import Settings
from shared.events.catalogue import CAREPLAN
from shared.events.envelope import Event
from shared.events.outbox import Outbox
from shared.events.worker import WorkerSpec
from shared.fhir.interactions import FhirApi
from shared.fhir.outcome import FhirError
from shared.fhir.registry import Repository
from shared.fhir.store import Store, Stored, Transaction, open_store
from shared.fhir.util import ref_id
from shared.logs import get_logger

log = get_logger("iop.encounters")
STATUS_EVENTS = {"planned": "iop.encounter.planned", "finished": "iop.encounter.finished",
                 "cancelled": "iop.encounter.cancelled"}
PLAN_KEY = "schedule-plan:"  # the latest version of each active plan, for the roll-forward


class EncounterHandlers:
    def __init__(self, repo: Repository, outbox: Outbox, clock: Callable[[], datetime] | None = None,
                 weeks_ahead: int = 1, program_tz: str = "UTC") -> None:
        self.repo, self.outbox = repo, outbox
        self.clock = clock or (lambda: datetime.now(UTC))
        self.weeks_ahead, self.tz = weeks_ahead, ZoneInfo(program_tz)

    # -- the workflow, for every write -------------------------------------------------------
    def check_workflow(self, tx: Transaction, encounter: dict, previous: Stored | None) -> None:
        error = workflow.transition_error(previous.resource if previous else None, encounter)
        if error is not None:
            raise error

    def announce(self, tx: Transaction, stored: Stored, previous: Stored | None) -> None:
        status = stored.resource.get("status")
        if previous is not None and previous.resource.get("status") == status:
            return
        if status in STATUS_EVENTS:
            self.outbox.emit(tx, STATUS_EVENTS[status], ref_id(stored.resource.get("subject")) or "", stored)

    # -- plan events → the schedule ----------------------------------------------------------
    def on_plan(self, tx: Transaction, event: Event) -> None:
        """A plan created, revised or graduated: its sessions for the coming weeks, and remembered for the
        roll-forward. A plan no longer active (graduated, revoked) has its planned sessions cancelled."""
        careplan, patient_id = event.focus, event.key
        tx.lock(PLAN_KEY + careplan["id"])  # one plan's schedule reconciled by one replica at a time
        episode = next((e["id"] for e in event.of_type("EpisodeOfCare")), None)
        active = careplan.get("status") == "active"
        tx.put_value(PLAN_KEY + careplan["id"], json.dumps({"careplan": careplan, "patient": patient_id,
                                                             "episode": episode}) if active else "")
        self.schedule(tx, careplan, patient_id, episode)

    def roll_forward(self, store: Store) -> int:
        """Plan the sessions of the days that have come into the window since, for every active plan.

        Each plan in its own transaction, re-read inside it, so a revision consumed meanwhile is not undone.
        Returns the number of plans looked at.
        """
        keys = [key for key, raw in store.values_with_prefix(PLAN_KEY) if raw]
        for key in keys:
            try:
                with store.transaction() as tx:
                    tx.lock(key)
                    raw = tx.get_value(key)
                    if raw:
                        plan = json.loads(raw)
                        self.schedule(tx, plan["careplan"], plan["patient"], plan["episode"])
            except Exception as exc:  # noqa: BLE001 - one plan that cannot be scheduled must not stop the others
                log.warning("schedule roll-forward failed", careplan_id=key.removeprefix(PLAN_KEY),
                            error=type(exc).__name__)
        return len(keys)

    def schedule(self, tx: Transaction, careplan: dict[str, Any], patient_id: str, episode: str | None) -> None:
        today = self.clock().astimezone(self.tz).date()
        window = (today, today + timedelta(weeks=self.weeks_ahead, days=-1))
        existing = self._sessions_of(tx, careplan["id"], patient_id)
        episode = episode or self._episode_of(existing)
        wanted = schedule.planned_sessions(careplan, today, self.weeks_ahead)
        plan = schedule.reconcile([s for s, _ in existing], wanted, window=window)
        for session in plan.create:
            encounter = schedule.planned_encounter(careplan, session, self.tz, episode_id=episode)
            self.repo.create(tx, encounter, rid=encounter.get("id"), validated=True)
        by_id = {s.encounter_id: enc for s, enc in existing}
        for session in plan.cancel:
            self.repo.update(tx, "Encounter", session.encounter_id or "",
                             workflow.cancel(by_id[session.encounter_id].resource, "plan-changed", self.clock()),
                             validated=True)
        if plan.create or plan.cancel:
            log.info("schedule reconciled", careplan_id=careplan["id"], planned=len(plan.create),
                     cancelled=len(plan.cancel), kept=len(plan.keep))

    def _sessions_of(self, tx: Transaction, careplan_id: str, patient_id: str) -> list[tuple[Any, Stored]]:
        found = []
        for rid in tx.find_ids("Encounter", "patient", None, f"Patient/{patient_id}"):
            stored = tx.read("Encounter", rid)
            session = schedule.session_from_encounter(stored.resource) if stored and not stored.deleted else None
            if session is not None and session.careplan_id == careplan_id:
                found.append((session, stored))
        return found

    @staticmethod
    def _episode_of(existing: list[tuple[Any, Stored]]) -> str | None:
        return next((ref_id(s.resource.get("episodeOfCare", [{}])[0]) for _, s in existing
                     if s.resource.get("episodeOfCare")), None)

    # -- a group session's attendance, in one transaction ------------------------------------
    def record_group(self, api: FhirApi, body: dict | None, **_: Any) -> tuple[int, dict]:
        request = group_request(body)
        try:
            encounters = sessions.group_attendance(request["group"], request["attendees"], start=request["start"],
                                                   end=request["end"], virtual=request["virtual"],
                                                   practitioner_id=request["practitioner"])
        except ValueError as exc:
            raise FhirError.single(422, str(exc), code="business-rule") from None
        with api.store.transaction() as tx:
            stored = [self.repo.update(tx, "Encounter", e["id"], e, validated=False) for e in encounters]
        entries = [{"fullUrl": f"{api.base}/Encounter/{s.id}", "resource": s.resource} for s in stored]
        return 200, {"resourceType": "Bundle", "type": "collection", "entry": entries}


def _param(body: dict, name: str) -> list[dict]:
    return [p for p in body.get("parameter", []) if p.get("name") == name]


def group_request(body: dict | None) -> dict[str, Any]:
    """Reads $record-group-attendance Parameters: group, start, end, virtual, practitioner, attendee."""
    if not body or body.get("resourceType") != "Parameters":
        raise FhirError.single(400, "$record-group-attendance takes a Parameters resource", code="structure")
    try:
        group = _param(body, "group")[0]["valueString"]
        start = datetime.fromisoformat(_param(body, "start")[0]["valueDateTime"])
        end = datetime.fromisoformat(_param(body, "end")[0]["valueDateTime"])
        attendees = [sessions.Attendee(
            ref_id(next(p["valueReference"] for p in a["part"] if p["name"] == "patient")) or "",
            next(p["valueCode"] for p in a["part"] if p["name"] == "attendance"),
            next((ref_id(p["valueReference"]) for p in a["part"] if p["name"] == "episode"), None))
            for a in _param(body, "attendee")]
    except (KeyError, IndexError, StopIteration, ValueError, TypeError):
        raise FhirError.single(400, "give group (valueString), start and end (valueDateTime) and one attendee per "
                                    "patient with parts patient (valueReference) and attendance (valueCode: "
                                    "attended | no-show | excused)", code="structure") from None
    if not attendees:
        raise FhirError.single(400, "at least one attendee is needed", code="required")
    virtual = bool(_param(body, "virtual") and _param(body, "virtual")[0].get("valueBoolean"))
    practitioner = ref_id(_param(body, "practitioner")[0]["valueReference"]) if _param(body, "practitioner") else None
    return {"group": group, "start": start, "end": end, "attendees": attendees, "virtual": virtual,
            "practitioner": practitioner}


def handlers_for(settings: Settings, registry_repo: Repository | None = None) -> EncounterHandlers:
    from services.encounters.resources import build_registry

    repo = registry_repo or Repository(build_registry(settings))
    return EncounterHandlers(repo, Outbox(settings.base_url), weeks_ahead=settings.schedule_weeks,
                             program_tz=settings.program_tz)


def worker_spec(settings: Settings) -> WorkerSpec:
    h = handlers_for(settings)
    store = open_store(settings.database)

    def roll_forward() -> None:
        """Once per IOP_SCHEDULE_SWEEP_S across the worker replicas (run_worker claims the period)."""
        h.roll_forward(store)

    return WorkerSpec(settings, store, topics=[CAREPLAN],
                      handlers={t: h.on_plan for t in ("iop.careplan.created", "iop.careplan.revised",
                                                       "iop.careplan.graduated")},
                      jobs=[(float(settings.schedule_sweep_s), roll_forward)])


