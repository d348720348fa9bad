"""SMART on the running suite: a backend service's client_credentials token over real HTTP, and a patient-facing
app whose token (`iop token --patient`) is bound to one patient: it reads its own plan and sessions, answers its
aftercare check-in (so that no missed-check-in alert fires for it), and cannot see or write anyone else's data on
any service, whether by read, search, include, write or Bundle entry."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import date, timedelta

import requests

from services.intake.questionnaires import SUBSTANCE_USE_CHECKIN_URL
from services.intake.samples import response
from shared.config import ROOT
from tests.e2e.test_ehr_delivery import graduate
from tests.e2e.test_journey import JSON, admit
from tests.support.auth import TEST_SECRET, http
from tests.support.events import EventWatcher
from tests.support.processes import TEST_PORTS, base_url
from tests.support.smart import SUITE_EHR
from tests.support.waiting import wait_until

INTAKE, CAREPLAN, ENCOUNTERS, AFTERCARE = (base_url(s) for s in ("intake", "careplan", "encounters", "aftercare"))
IN_COMPARTMENT = {INTAKE: ["Patient", "QuestionnaireResponse", "Observation", "ServiceRequest", "Flag"],
                  CAREPLAN: ["CarePlan", "Goal", "EpisodeOfCare", "Task"], ENCOUNTERS: ["Encounter"],
                  AFTERCARE: ["CarePlan", "Goal", "ServiceRequest", "Consent", "Provenance"]}


def patient_token(patient: str) -> str:
    """What a developer runs: `iop token --patient Patient/x --scope 'patient/*.cruds'`."""
    env = {**os.environ, "IOP_AUTH_HS256_SECRET": TEST_SECRET}
    out = subprocess.run([sys.executable, "-m", "shared.cli", "token", "--patient", f"Patient/{patient}",
                          "--scope", "patient/*.cruds", "--sub", "patient-app"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def app_session(patient: str) -> requests.Session:
    s = requests.Session()
    s.headers.update({"Authorization": f"Bearer {patient_token(patient)}"})
    return s


def entries(bundle: dict) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", [])]


def belongs_to(resource: dict, patient: str) -> bool:
    if resource["resourceType"] == "Patient":
        return resource["id"] == patient
    ref = (resource.get("subject") or resource.get("patient") or {}).get("reference")
    return ref == f"Patient/{patient}"


def test_a_backend_service_token_from_one_service_reads_every_service(suite) -> None:
    careplan_root = CAREPLAN.removesuffix("/fhir")
    config = requests.get(f"{careplan_root}/.well-known/smart-configuration", timeout=5).json()
    assert config["token_endpoint"] == f"{careplan_root}/auth/token"
    resp = requests.post(config["token_endpoint"], data=SUITE_EHR.form(
        SUITE_EHR.assertion(config["token_endpoint"]), "system/CarePlan.rs system/Patient.rs system/Goal.cruds"),
        timeout=10)
    assert resp.status_code == 200, resp.text
    granted = resp.json()
    assert granted["scope"] == "system/CarePlan.rs system/Patient.rs"  # Goal.cruds is more than it may have
    auth = {"Authorization": f"Bearer {granted['access_token']}"}
    assert requests.get(f"{CAREPLAN}/CarePlan?_count=1", headers=auth, timeout=5).status_code == 200
    assert requests.get(f"{INTAKE}/Patient?_count=1", headers=auth, timeout=5).status_code == 200
    assert requests.get(f"{ENCOUNTERS}/Encounter", headers=auth, timeout=5).status_code == 403  # not granted
    bad = requests.get(f"{CAREPLAN}/CarePlan", headers={"Authorization": "Bearer " + granted["access_token"][:-4]
                                                        + "AAAA"}, timeout=5)
    assert bad.status_code == 401 and bad.json()["resourceType"] == "OperationOutcome"
    once = SUITE_EHR.assertion(config["token_endpoint"])
    first, replayed = (requests.post(config["token_endpoint"], data=SUITE_EHR.form(once), timeout=10)
                       for _ in range(2))
    assert first.status_code == 200 and replayed.status_code == 401 and replayed.json()["error"] == "invalid_client"


def test_a_patient_app_answers_its_checkin_and_sees_nothing_of_anyone_else(suite, watcher: EventWatcher) -> None:
    me, _ = admit(watcher)
    other, other_plan = admit(watcher)
    iop_plan = http.get(f"{CAREPLAN}/CarePlan", params={"patient": me}, timeout=5).json()["entry"][0]["resource"]
    graduate(iop_plan["id"])
    watcher.wait_for("iop.aftercare.planned", me)
    app = app_session(me)

    # Its own plan and sessions, on every service, and nothing else.
    for base, types in IN_COMPARTMENT.items():
        for rtype in types:
            bundle = app.get(f"{base}/{rtype}", params={"_count": 100}, timeout=10)
            assert bundle.status_code == 200, (base, rtype, bundle.text)
            assert all(belongs_to(r, me) for r in entries(bundle.json())), (base, rtype)
            assert bundle.json()["total"] == len(entries(bundle.json()))
    plans = entries(app.get(f"{AFTERCARE}/CarePlan", params={"status": "active"}, timeout=5).json())
    assert len(plans) == 1
    assert entries(app.get(f"{ENCOUNTERS}/Encounter", timeout=5).json())  # its sessions
    checkin = next(a for a in plans[0]["activity"] if "scheduledTiming" in a.get("detail", {}))["detail"]
    due = [date.fromisoformat(d) for d in checkin["scheduledTiming"]["event"]]

    # It answers the first check-in on its day; the aftercare worker completes it.
    answer = response(SUBSTANCE_USE_CHECKIN_URL, f"Patient/{me}") | {"authored": f"{due[0].isoformat()}T10:00:00Z"}
    posted = app.post(f"{INTAKE}/QuestionnaireResponse", json=answer, headers=JSON, timeout=10)
    assert posted.status_code == 201, posted.text
    log = suite["aftercare-worker"].log
    wait_until(lambda: any('"check-in completed"' in line and plans[0]["id"] in line
                           for line in log.read_text(errors="replace").splitlines()), 30, what="check-in completed")

    # Its first window closes without an alert; the next two, unanswered, alert (after it, on its partition).
    for day in (due[0] + timedelta(days=4), due[2] + timedelta(days=4)):
        sweep = {"resourceType": "Parameters", "parameter": [{"name": "date", "valueDate": day.isoformat()}]}
        assert http.post(f"{AFTERCARE}/CarePlan/$sweep-checkins", json=sweep, headers=JSON, timeout=10).ok
    missed = watcher.wait_for("iop.aftercare.checkin-missed", me, count=2)
    dues = [p["valueDate"] for m in missed for p in m.of_type("Parameters")[0]["parameter"] if p["name"] == "due"]
    assert dues == [due[1].isoformat(), due[2].isoformat()]

    # Anyone else's data: unknown when named, absent from searches and includes, refused when written.
    others = {CAREPLAN: f"CarePlan/{other_plan['id']}", INTAKE: f"Patient/{other}"}
    for base, ref in others.items():
        hidden = app.get(f"{base}/{ref}", timeout=5)
        assert hidden.status_code == 404 and hidden.json()["resourceType"] == "OperationOutcome"
        rtype, rid = ref.split("/")
        nobody = str(uuid.uuid4())
        absent = app.get(f"{base}/{rtype}/{nobody}", timeout=5)  # answered exactly as what does not exist
        assert hidden.text.replace(rid, nobody) == absent.text
    their_sessions = http.get(f"{ENCOUNTERS}/Encounter", params={"patient": other}, timeout=5).json()
    session = entries(their_sessions)[0]
    assert app.get(f"{ENCOUNTERS}/Encounter/{session['id']}", timeout=5).status_code == 404
    for base, rtype in ((INTAKE, "Observation"), (CAREPLAN, "Goal"), (ENCOUNTERS, "Encounter"),
                        (AFTERCARE, "CarePlan")):
        probe = app.get(f"{base}/{rtype}", params={"patient": other}, timeout=5).json()
        assert probe["total"] == 0 and not probe.get("entry")
    included = app.get(f"{INTAKE}/Observation", params={"_include": "Observation:subject",
                                                        "_count": 100}, timeout=5).json()
    assert {r["id"] for r in entries(included) if r["resourceType"] == "Patient"} == {me}
    assert app.get(f"{INTAKE}/Patient", params={"_id": other, "_revinclude": "Observation:subject"},
                   timeout=5).json()["total"] == 0
    assert app.get(f"{CAREPLAN}/Goal", params={"_has:CarePlan:goal:patient": other}, timeout=5).json()["total"] == 0
    assert app.get(f"{INTAKE}/Patient/{other}/$everything", timeout=5).status_code == 404
    assert app.post(f"{INTAKE}/QuestionnaireResponse", json=response(SUBSTANCE_USE_CHECKIN_URL, f"Patient/{other}"),
                    headers=JSON, timeout=10).status_code == 403
    their_plan = http.get(f"{CAREPLAN}/{others[CAREPLAN]}", timeout=5).json()
    changed = {**their_plan, "description": "changed by someone else's app"}
    assert app.put(f"{CAREPLAN}/{others[CAREPLAN]}", json=changed, headers=JSON, timeout=10).status_code == 403
    assert app.delete(f"{ENCOUNTERS}/Encounter/{session['id']}", timeout=10).status_code == 403
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "request": {"method": "POST", "url": "QuestionnaireResponse"},
         "resource": response(SUBSTANCE_USE_CHECKIN_URL, f"Patient/{other}")}]}
    assert app.post(INTAKE, json=transaction, headers=JSON, timeout=10).status_code == 403
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": others[CAREPLAN]}},
        {"request": {"method": "PUT", "url": others[CAREPLAN]}, "resource": changed}]}
    answered = app.post(CAREPLAN, json=batch, headers=JSON, timeout=10).json()
    assert [e["response"]["status"][:3] for e in answered["entry"]] == ["404", "403"]
    assert http.get(f"{CAREPLAN}/{others[CAREPLAN]}", timeout=5).json()["meta"] == their_plan["meta"]
    for base in (f"{AFTERCARE}/Subscription", f"{INTAKE}/AuditEvent", f"{CAREPLAN}/_history"):
        assert app.get(base, timeout=5).status_code == 403
    assert len(TEST_PORTS) == len(IN_COMPARTMENT)  # every service was probed
