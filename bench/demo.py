"""One synthetic patient through the five steps of care, against the suite that `make run` started.

    make run && make demo        (python -m bench.demo)

A referral partner submits the intake; the plan is drafted; sessions are held, one missed; a PHQ-9
re-assessment shows improvement; a clinician revises the plan; the patient graduates (with an
override, six weeks have not passed) and aftercare is planned. A stand-in EHR on 127.0.0.1:8099,
subscribed at aftercare under a Part 2 consent, receives the notifications. Each step says what
happened, which resources exist and which events went over Kafka. Exits 1 when a step does not
happen within its deadline.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any

from bench.demo_support import (
    BOOTSTRAP,
    PARTNER_SCOPES,
    StepFailed,
    base_url,
    check_consumers,
    check_running,
    expect,
    observation_line,
    say,
    session,
    show_events,
    token,
    wait_event,
)
from bench.measure import wait_until
from bench.receiver import Receiver
from bench.resources import NO_SHOW, consent, event_numbers, focus_references, notification_status, subscription
from bench.watch import TopicWatcher
from services.intake.samples import created_id, follow_up_phq9, partner_submission
from shared.events.catalogue import TOPICS

EHR_PORT = 8099
EHR_ORG = "Organization/community-clinic-ehr"
INTAKE, CAREPLAN, ENCOUNTERS, AFTERCARE = (base_url(s) for s in ("intake", "careplan", "encounters", "aftercare"))


class Journey:
    def __init__(self, watcher: TopicWatcher, ehr: Receiver) -> None:
        self.watcher, self.ehr = watcher, ehr
        self.partner = session(token(PARTNER_SCOPES, "demo-referral-partner", partner="demo-referrals"))
        self.clinic = session(token("system/*.cruds", "demo-clinic"))
        self.patient: str = ""
        self.careplan: dict[str, Any] = {}
        self.subscriptions: list[str] = []

    def step(self, number: int, title: str) -> float:
        say(f"\nStep {number}. {title}")
        return time.perf_counter()

    def intake(self) -> None:
        since = self.step(1, "Intake and assessment: a referral partner submits the intake")
        answer = expect(self.partner.post(INTAKE, json=partner_submission(), timeout=10), 200, "intake transaction")
        self.patient = created_id(answer, "Patient")
        made = [e["response"]["location"].rsplit("/_history", 1)[0] for e in answer["entry"]]
        say(f"  The partner POSTed a transaction Bundle to {INTAKE}: HTTP 200. Created: {', '.join(made)}")
        assessed = wait_event(self.watcher, "iop.intake.assessed", self.patient)[0]
        say("  Intake scored the answers and recommended a level of care:")
        for obs in assessed.of_type("Observation"):
            say(f"    Observation/{obs['id']}  {observation_line(obs)}")
        show_events(self.watcher, self.patient, since)

    def plan(self) -> None:
        since = self.step(2, "The personalised plan is drafted, and its sessions scheduled")
        created = wait_event(self.watcher, "iop.careplan.created", self.patient)[0]
        self.careplan = created.focus
        say(f"  careplan drafted CarePlan/{self.careplan['id']} \"{self.careplan.get('title', '')}\" with "
            f"{len(self.careplan.get('activity', []))} activities:")
        for activity in self.careplan.get("activity", []):
            detail = activity.get("detail", {})
            repeat = detail.get("scheduledTiming", {}).get("repeat", {})
            say(f"    - {detail.get('code', {}).get('text', '?')}: {repeat.get('frequency', '?')}x per "
                f"{repeat.get('periodUnit', '?')}")
        say("  Goals: " + "; ".join(f"Goal/{g['id']} {g['description']['text']}" for g in created.of_type("Goal")))
        say("  Episode: " + ", ".join(f"EpisodeOfCare/{e['id']}" for e in created.of_type("EpisodeOfCare")))
        planned = wait_event(self.watcher, "iop.encounter.planned", self.patient)
        time.sleep(0.5)  # the rest of the schedule arrives in the same commit
        say(f"  encounters scheduled {len(self.watcher.seen('iop.encounter.planned', self.patient))} sessions "
            f"(first Encounter/{planned[0].focus['id']})")
        self.subscribe_ehr()
        show_events(self.watcher, self.patient, since)

    def subscribe_ehr(self) -> None:
        """The community clinic's EHR subscribes at aftercare; the patient's Part 2 consent names the clinic."""
        granted = expect(self.clinic.post(f"{AFTERCARE}/Consent", json=consent(self.patient, [EHR_ORG]), timeout=10),
                         201, "Consent")
        for topic, content in (("careplan-revised", "id-only"), ("careplan-graduated", "id-only"),
                               ("aftercare-planned", "full-resource")):
            sub = subscription(topic, self.patient, f"{self.ehr.url}/fhir/notify", EHR_ORG, content,
                               reason="The community clinic follows this patient's IOP plan")
            self.subscriptions.append(expect(self.clinic.post(f"{AFTERCARE}/Subscription", json=sub, timeout=10),
                                             201, f"Subscription to {topic}")["id"])
        deadline = time.monotonic() + 20
        while any(self._status(sid) != "active" for sid in self.subscriptions):
            if time.monotonic() > deadline:
                raise StepFailed("the EHR subscriptions did not become active (handshake) within 20 s")
            time.sleep(0.2)
        say(f"  The clinic's EHR (http://127.0.0.1:{EHR_PORT}) subscribed: Consent/{granted['id']} permits "
            f"disclosure to {EHR_ORG}; " + ", ".join(f"Subscription/{s}" for s in self.subscriptions) + " active")

    def _status(self, sid: str) -> str:
        return self.clinic.get(f"{AFTERCARE}/Subscription/{sid}", timeout=5).json().get("status", "")

    def sessions(self) -> None:
        since = self.step(3, "Therapy sessions and skill development: two held, one missed")
        found = expect(self.clinic.get(f"{ENCOUNTERS}/Encounter", params={
            "patient": self.patient, "status": "planned", "_sort": "date", "_count": 3}, timeout=10), 200, "sessions")
        sessions = [e["resource"] for e in found.get("entry", [])]
        if len(sessions) < 3:
            raise StepFailed(f"expected at least 3 planned sessions, found {len(sessions)}")
        for encounter, outcome in zip(sessions, ("finished", "finished", "cancelled"), strict=True):
            changed = dict(encounter, status=outcome)
            if outcome == "cancelled":
                changed["extension"] = [*encounter.get("extension", []), NO_SHOW]
            expect(self.clinic.put(f"{ENCOUNTERS}/Encounter/{encounter['id']}", json=changed, timeout=10,
                                   headers={"If-Match": f'W/"{encounter["meta"]["versionId"]}"'}), 200, "session")
            kind = (encounter.get("type") or [{}])[0].get("text") or "session"
            say(f"    Encounter/{encounter['id']} {kind} on {encounter['period']['start'][:10]}: "
                + ("attended" if outcome == "finished" else "no-show"))
        wait_event(self.watcher, "iop.encounter.finished", self.patient, 2)
        wait_event(self.watcher, "iop.encounter.cancelled", self.patient)
        attendance = self._attendance(lambda a: a.get("attended") == 2 and a.get("missed") == 1)
        say(f"  careplan recorded attendance on CarePlan/{self.careplan['id']}: " +
            ", ".join(f"{k} {v}" for k, v in attendance.items()))
        show_events(self.watcher, self.patient, since)

    def _attendance(self, done: Any, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            plan = self.clinic.get(f"{CAREPLAN}/CarePlan/{self.careplan['id']}", timeout=5).json()
            ext = next((e for e in plan.get("extension", []) if e["url"].endswith("session-attendance")), {})
            counts = {e["url"]: next(iter(v for k, v in e.items() if k.startswith("value")), None)
                      for e in ext.get("extension", [])}
            counts = {k: v.get("value") if isinstance(v, dict) else v for k, v in counts.items()}
            if done(counts):
                return counts
            if time.monotonic() > deadline:
                raise StepFailed(f"attendance did not reach 2 attended, 1 missed within {timeout:.0f} s: {counts}")
            time.sleep(0.2)

    def progress(self) -> None:
        since = self.step(4, "Progress monitoring: a PHQ-9 re-assessment, then the clinician revises the plan")
        answer = expect(self.clinic.post(f"{INTAKE}/QuestionnaireResponse", json=follow_up_phq9(self.patient),
                                         timeout=10), 201, "PHQ-9 follow-up")
        say(f"  The patient answered a follow-up PHQ-9: QuestionnaireResponse/{answer['id']}")
        completed = wait_event(self.watcher, "iop.assessment.completed", self.patient)[0]
        for obs in completed.of_type("Observation"):
            say(f"    Observation/{obs['id']}  {observation_line(obs)}")
        for goal in (g.focus for g in wait_event(self.watcher, "iop.goal.updated", self.patient)):
            status = goal.get("achievementStatus", {}).get("coding", [{}])[0].get("code")
            say(f"    careplan updated Goal/{goal['id']} \"{goal['description']['text']}\": {status}")
        for attempt in range(3):  # progress may move the plan between our read and our write
            plan = self.clinic.get(f"{CAREPLAN}/CarePlan/{self.careplan['id']}", timeout=5).json()
            plan["note"] = [*plan.get("note", []), {"authorString": "Dr. Demo", "text": "Mood much improved (PHQ-9 "
                            "11 -> 3); keep group therapy, add a family session once the family can attend."}]
            resp = self.clinic.put(f"{CAREPLAN}/CarePlan/{plan['id']}", json=plan, timeout=10,
                                   headers={"If-Match": f'W/"{plan["meta"]["versionId"]}"'})
            if resp.status_code != 412 or attempt == 2:
                break
        revised = expect(resp, 200, "the clinician's revision")
        say(f"  A clinician revised CarePlan/{revised['id']} (note added): now version {revised['meta']['versionId']}")
        wait_event(self.watcher, "iop.careplan.revised", self.patient)
        self.wait_ehr("careplan-revised", f"CarePlan/{revised['id']}")
        show_events(self.watcher, self.patient, since)

    def graduation(self) -> None:
        since = self.step(5, "Graduation and aftercare")
        override = {"resourceType": "Parameters", "parameter": [{"name": "override-reason", "valueString":
                    "Stable mood and full engagement; stepping down early to match the new work schedule."}]}
        done = expect(self.clinic.post(f"{CAREPLAN}/CarePlan/{self.careplan['id']}/$graduate", json=override,
                                       timeout=10), 200, "$graduate with an override reason")
        say(f"  The clinician graduated the patient (override: six weeks have not passed): CarePlan/{done['id']} "
            f"is {done['status']}")
        graduated = wait_event(self.watcher, "iop.careplan.graduated", self.patient)[0]
        say("    " + ", ".join(f"EpisodeOfCare/{e['id']} {e['status']}" for e in graduated.of_type("EpisodeOfCare")))
        try:
            left = wait_until(lambda: not self.planned_sessions() and self.cancelled_sessions(), 20, 0.2,
                              "the sessions still planned cancelled after graduation")
        except TimeoutError as exc:
            raise StepFailed(str(exc)) from None
        say(f"  encounters cancelled the {len(left)} sessions still planned (reason: plan changed); none are planned "
            "any more")
        planned = wait_event(self.watcher, "iop.aftercare.planned", self.patient)[0]
        say(f"  aftercare planned the step-down: CarePlan/{planned.focus['id']} \"{planned.focus.get('title', '')}\"")
        for referral in planned.of_type("ServiceRequest"):
            say(f"    ServiceRequest/{referral['id']}  {referral.get('code', {}).get('text', '')}")
        for goal in planned.of_type("Goal"):
            say(f"    Goal/{goal['id']}  {goal['description']['text']}")
        self.wait_ehr("careplan-graduated", f"CarePlan/{self.careplan['id']}")
        self.wait_ehr("aftercare-planned", f"CarePlan/{planned.focus['id']}")
        wait_event(self.watcher, "iop.ehr.delivered", self.patient, 3)
        show_events(self.watcher, self.patient, since)

    def planned_sessions(self) -> list[dict]:
        return self.encounters("planned")

    def cancelled_sessions(self) -> list[dict]:
        return [e for e in self.encounters("cancelled") if "plan-changed" in json.dumps(e.get("extension", []))]

    def encounters(self, status: str) -> list[dict]:
        found = expect(self.clinic.get(f"{ENCOUNTERS}/Encounter", params={
            "patient": self.patient, "status": status, "_count": 100}, timeout=10), 200, "Encounter search")
        return [e["resource"] for e in found.get("entry", [])]

    def wait_ehr(self, topic: str, focus: str, timeout: float = 20) -> None:
        """The EHR got a notification on `topic` about `focus`; says so."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in self.ehr.received():
                bundle = json.loads(item["body"])
                status = notification_status(bundle)
                if (status["type"] == "event-notification" and status["topic"].endswith("/" + topic)
                        and any(r.split("/_history")[0].endswith(focus) for r in focus_references(bundle))):
                    say(f"  The EHR received notification {event_numbers(bundle)[0]} of its {topic} subscription "
                        f"about {focus}: {len(item['body'])} bytes, POST {item['path']}")
                    return
            time.sleep(0.1)
        raise StepFailed(f"the EHR got no {topic} notification about {focus} within {timeout:.0f} s")


def where_to_look(journey: Journey) -> None:
    p, plan = journey.patient, journey.careplan.get("id", "")
    say("\nWhere to look (every FHIR call needs a token: TOKEN=$(.venv/bin/iop token --scope 'system/*.cruds'),\n"
        "then curl -H \"Authorization: Bearer $TOKEN\" URL):")
    for url in (f"{INTAKE}/Patient/{p}", f"{INTAKE}/Observation?subject=Patient/{p}", f"{CAREPLAN}/CarePlan/{plan}",
                f"{CAREPLAN}/CarePlan/{plan}/_history", f"{ENCOUNTERS}/Encounter?patient={p}&_sort=date",
                f"{AFTERCARE}/CarePlan?patient={p}", f"{AFTERCARE}/Subscription/{journey.subscriptions[0]}/$status",
                f"{AFTERCARE}/AuditEvent?entity=Subscription/{journey.subscriptions[0]}"):
        say(f"  {url}")
    say(f"Topics on {BOOTSTRAP}: {', '.join(TOPICS)} (and each one's .dlq); key = the patient id ({p})")
    say("  .venv/bin/iop events tail iop.careplan.events --from-beginning")
    say("  .venv/bin/iop dlq list iop.careplan.events")
    say("  .venv/bin/iop status")


def main() -> int:
    started = time.perf_counter()
    try:
        check_running()
        check_consumers()
        ehr = Receiver(EHR_PORT).start()
    except OSError as exc:
        say(f"demo: cannot listen on 127.0.0.1:{EHR_PORT} for the stand-in EHR: {exc}")
        return 1
    except StepFailed as exc:
        say(f"demo: {exc}")
        return 1
    with TopicWatcher(BOOTSTRAP, TOPICS, keep_records=True, parse_values=True) as watcher:
        journey = Journey(watcher, ehr)
        try:
            for step in (journey.intake, journey.plan, journey.sessions, journey.progress, journey.graduation):
                step()
        except StepFailed as exc:
            say(f"\ndemo: FAILED: {exc}")
            return 1
        finally:
            ehr.stop()
    where_to_look(journey)
    say(f"\nDone in {time.perf_counter() - started:.1f} s: one patient, five steps of care, "
        f"{len(watcher.seen(key=journey.patient))} events, {len(journey.subscriptions)} EHR subscriptions.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
