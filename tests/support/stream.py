"""Intakes streaming in while something is done to the running suite, and the check that each led to one plan."""
from __future__ import annotations

import threading
from collections import Counter

import requests

from services.intake.samples import created_id, partner_submission
from tests.support.auth import bearer
from tests.support.events import EventWatcher
from tests.support.waiting import wait_until

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


class IntakeStream:
    """Posts partner submissions one after another from a thread until stopped, as a partner's engine would."""

    def __init__(self, intake_base: str, pause_s: float = 0.05) -> None:
        self.intake_base, self.pause_s = intake_base, pause_s
        self.accepted: list[str] = []  # the patients of the submissions answered 200
        self.statuses: Counter[int] = Counter()  # every answer's status (0: no answer)
        self._stop, self._lock = threading.Event(), threading.Lock()
        self._thread = threading.Thread(target=self._run, name="intake-stream", daemon=True)
        self._http = requests.Session()
        self._http.headers.update({**bearer(), **FHIR_JSON})

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                resp = self._http.post(self.intake_base, json=partner_submission(), timeout=30)
                status = resp.status_code
            except requests.RequestException:
                status = 0
            with self._lock:
                self.statuses[status] += 1
                if status == 200:
                    self.accepted.append(created_id(resp.json(), "Patient"))
            self._stop.wait(self.pause_s)

    def count(self) -> int:
        with self._lock:
            return len(self.accepted)

    def __enter__(self) -> IntakeStream:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> list[str]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(60)
        self._http.close()
        return list(self.accepted)


def one_plan_each(careplan_base: str, patients: list[str], watcher: EventWatcher, timeout: float = 90) -> None:
    """Every patient gets exactly one CarePlan, announced by one `iop.careplan.created` (redeliveries of that
    event, which share its ce_id, are the relay's at-least-once and no second plan)."""
    http = requests.Session()
    http.headers.update(bearer())
    try:
        def plans(patient: str) -> int:
            return http.get(f"{careplan_base}/CarePlan", params={"patient": patient}, timeout=10).json()["total"]

        wait_until(lambda: len({e.key for e in watcher.events("iop.careplan.created")} & set(patients))
                   == len(patients), timeout, 0.2, f"a plan for each of {len(patients)} intakes")
        counts = {patient: plans(patient) for patient in patients}
        assert {p: n for p, n in counts.items() if n != 1} == {}, "patients without exactly one CarePlan"
        created: dict[str, set[str]] = {}
        for event in watcher.events("iop.careplan.created"):
            created.setdefault(event.key, set()).add(event.headers["ce_id"])
        assert {p: ids for p, ids in created.items() if p in patients and len(ids) != 1} == {}
    finally:
        http.close()
