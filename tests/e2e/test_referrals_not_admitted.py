"""Step 1 to 2 of care when intake recommends no IOP admission: careplan takes the event, drafts no plan and
fails on nothing (the check after every broker test fails it on a dead letter or a handler error)."""
from __future__ import annotations

import pytest

from services.intake.samples import created_id, partner_submission, phq9
from tests.e2e.test_journey import JSON
from tests.support.auth import http
from tests.support.broker import Broker
from tests.support.events import EventWatcher
from tests.support.failure_watch import settle
from tests.support.processes import base_url

INTAKE, CAREPLAN = base_url("intake"), base_url("careplan")
NOT_ADMITTED = {"safety alert": ({**phq9([2, 2, 1, 1, 2, 1, 1, 1, 1])}, "urgent-safety-review"),
                "unsafe home: a higher level of care": ({"safe_housing": [False]}, "higher-level")}


@pytest.mark.parametrize("answers, disposition", NOT_ADMITTED.values(), ids=NOT_ADMITTED.keys())
def test_given_a_referral_that_is_not_an_iop_admission_then_careplan_drafts_no_plan_and_fails_on_nothing(
        watcher: EventWatcher, broker: Broker, answers: dict, disposition: str) -> None:
    resp = http.post(INTAKE, json=partner_submission(**answers), headers=JSON, timeout=10)
    assert resp.status_code == 200, resp.text
    patient = created_id(resp.json(), "Patient")
    assessed = watcher.wait_for("iop.intake.assessed", patient)[0]
    recommendation = next(o for o in assessed.of_type("Observation")
                          if o["code"]["coding"][0]["code"] == "asam-level-recommendation")
    given = next(c for c in recommendation["component"] if c["code"]["coding"][0]["code"] == "disposition")
    assert given["valueCodeableConcept"]["coding"][0]["code"] == disposition

    settle(broker.bootstrap)  # every group has consumed everything there is, careplan's among them
    assert http.get(f"{CAREPLAN}/CarePlan", params={"patient": patient}, timeout=5).json()["total"] == 0
    assert http.get(f"{CAREPLAN}/EpisodeOfCare", params={"patient": patient}, timeout=5).json()["total"] == 0
    assert not watcher.events("iop.careplan.created", patient)
