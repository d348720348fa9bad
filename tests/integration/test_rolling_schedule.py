"""The schedule as days pass, against a real store: each active plan's window rolls forward, exactly once,
and a graduated plan's sessions still to come are cancelled."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.encounters.handlers import EncounterHandlers
from services.encounters.resources import build_registry
from shared.config import Settings
from shared.events.envelope import build_event, parse_event
from shared.events.outbox import Outbox
from shared.fhir.registry import Repository
from shared.fhir.store import open_store
from tests.support.engines import query
from tests.support.postgres import store_locator
from tests.unit.test_encounters_schedule import CAREPLAN  # Mon/Wed/Fri group and a Monday individual session

MONDAY = datetime(2025, 3, 3, 6, 0, tzinfo=UTC)  # the first day of the plan's activities


class Clinic:
    def __init__(self, tmp_path: Path) -> None:
        settings = Settings(service="encounters", database=store_locator(tmp_path / "encounters.db"))
        self.store, self.now = open_store(settings.database), MONDAY
        self.handlers = EncounterHandlers(Repository(build_registry(settings)), Outbox(settings.base_url),
                                          clock=lambda: self.now, weeks_ahead=1, program_tz="UTC")

    def plan_event(self, type_: str, careplan: dict) -> None:
        event = build_event(type_, "http://127.0.0.1:8082/fhir", "pat-1", careplan)
        parsed = parse_event([(k, v.encode()) for k, v in event.headers], b"pat-1", event.value.encode())
        with self.store.transaction() as tx:
            self.handlers.on_plan(tx, parsed)

    def sessions(self) -> dict[str, list[str]]:
        """Session start dates by Encounter status."""
        by_status: dict[str, list[str]] = {}
        for (raw,) in query(self.store, "SELECT json FROM resource WHERE type='Encounter'"):
            encounter = json.loads(raw)
            by_status.setdefault(encounter["status"], []).append(encounter["period"]["start"][:10])
        return {status: sorted(days) for status, days in by_status.items()}

    def planned_events(self) -> int:
        return sum(dict(map(tuple, e.headers)).get("ce_type") == "iop.encounter.planned"
                   for e in self.store.unsent_events(1000))


def test_given_days_passing_then_each_active_plan_rolls_forward_once(tmp_path: Path) -> None:
    clinic = Clinic(tmp_path)
    clinic.plan_event("iop.careplan.created", CAREPLAN)
    week_1 = ["2025-03-03", "2025-03-03", "2025-03-05", "2025-03-07"]
    assert clinic.sessions() == {"planned": week_1}

    clinic.now += timedelta(days=7)
    assert clinic.handlers.roll_forward(clinic.store) == 1
    assert clinic.handlers.roll_forward(clinic.store) == 1  # a second run the same day plans nothing more
    week_2 = ["2025-03-10", "2025-03-10", "2025-03-12", "2025-03-14"]
    assert clinic.sessions() == {"planned": week_1 + week_2}  # last week's are left to be recorded
    assert clinic.planned_events() == 8  # one iop.encounter.planned per session, none twice


def test_given_graduation_then_the_sessions_still_to_come_are_cancelled_and_no_more_are_planned(
        tmp_path: Path) -> None:
    clinic = Clinic(tmp_path)
    clinic.plan_event("iop.careplan.created", CAREPLAN)
    clinic.now += timedelta(days=2)  # Wednesday: Monday's sessions are in the past
    clinic.plan_event("iop.careplan.graduated", dict(CAREPLAN, status="completed"))
    sessions = clinic.sessions()
    assert sessions["cancelled"] == ["2025-03-05", "2025-03-07"]  # Wednesday's and Friday's
    assert sessions["planned"] == ["2025-03-03", "2025-03-03"]   # Monday's stay for their outcome to be recorded

    clinic.now += timedelta(days=7)
    assert clinic.handlers.roll_forward(clinic.store) == 0
    assert clinic.sessions() == sessions


def test_a_plan_that_cannot_be_scheduled_does_not_stop_the_others_rolling_forward(tmp_path: Path) -> None:
    clinic = Clinic(tmp_path)
    broken = dict(CAREPLAN, id="cp-0-broken", activity=[{"detail": {
        **CAREPLAN["activity"][0]["detail"], "code": {"coding": [{"system": "urn:example", "code": "x"}]}}}])
    with clinic.store.transaction() as tx:  # remembered as it came, before its first scheduling failed
        tx.put_value("schedule-plan:cp-0-broken", json.dumps({"careplan": broken, "patient": "pat-1", "episode": None}))
    clinic.plan_event("iop.careplan.created", CAREPLAN)
    clinic.now += timedelta(days=7)
    assert clinic.handlers.roll_forward(clinic.store) == 2
    assert len(clinic.sessions()["planned"]) == 8  # cp-1 rolled forward regardless
