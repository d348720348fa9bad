"""P3 EHR fan-out: a clinician's CarePlan revision (PUT answered 200) to the subscribed EHR's receipt.

One admitted patient, a Part 2 Consent permitting the EHR's organisation, a careplan-revised
Subscription to a receiver in its own process (bench/receiver.py, which timestamps each request
with time.time() when its body is in). Revisions are sent one at a time, each once the previous
notification arrived, and matched to notifications by event number.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any

import requests

from bench.harness import BOOTSTRAP, Proc, base_url, bearer, partner_bearer, service_env
from bench.load import IntakeLoad, bodies
from bench.measure import summary_ms, wait_until
from bench.resources import FHIR_JSON, consent, event_numbers, notification_status, subscription
from bench.watch import TopicWatcher
from shared.events.catalogue import CAREPLAN

RECEIVER_PORT = 28099
ORGANISATION = "Organization/bench-ehr"


class RemoteReceiver:
    def __init__(self) -> None:
        self.url = f"http://127.0.0.1:{RECEIVER_PORT}"
        self.proc = Proc("receiver", [sys.executable, "-m", "bench.receiver", str(RECEIVER_PORT)]).start(service_env())
        self.http = requests.Session()
        wait_until(self._up, 20, 0.1, "the bench receiver")

    def _up(self) -> bool:
        try:
            return self.http.get(f"{self.url}/_received", timeout=1).ok
        except requests.RequestException:
            return False

    def received(self, since: int = 0) -> list[dict]:
        return self.http.get(f"{self.url}/_received", params={"since": since}, timeout=5).json()

    def stop(self) -> None:
        self.proc.stop(5)


def admit() -> tuple[str, dict]:
    """A referral admitted to IOP: its patient id and drafted CarePlan."""
    with TopicWatcher(BOOTSTRAP, (CAREPLAN,), types={"iop.careplan.created"}, keep_records=True,
                      parse_values=True) as watcher:
        sub = IntakeLoad(base_url("intake"), partner_bearer()).submit(bodies(1)[0])
        if not sub.accepted:
            raise RuntimeError(f"intake refused the P3 patient: {sub.error}")
        return sub.patient, watcher.wait_for("iop.careplan.created", sub.patient, timeout=60)[0].focus


def post(http: requests.Session, service: str, resource: dict) -> dict:
    resp = http.post(f"{base_url(service)}/{resource['resourceType']}", data=json.dumps(resource), timeout=10)
    if resp.status_code != 201:
        raise RuntimeError(f"{service} refused the {resource['resourceType']}: {resp.status_code} {resp.text[:300]}")
    return resp.json()


def run(revisions: int, warm_up: int = 3) -> dict[str, Any]:
    http = requests.Session()
    http.headers.update({**FHIR_JSON, **bearer()})
    receiver = RemoteReceiver()
    try:
        patient, careplan = admit()
        post(http, "aftercare", consent(patient, [ORGANISATION]))
        sub = post(http, "aftercare", subscription("careplan-revised", patient, f"{receiver.url}/notify", ORGANISATION))
        wait_until(lambda: http.get(f"{base_url('aftercare')}/Subscription/{sub['id']}", timeout=5).json()["status"]
                   == "active", 30, 0.1, "the subscription's handshake")
        plan = http.get(f"{base_url('careplan')}/CarePlan/{careplan['id']}", timeout=5).json()
        seen, latencies, put_ms = len(receiver.received()), [], []
        for n in range(1, warm_up + revisions + 1):
            plan["note"] = [{"text": f"Revision {n}: weekly family session added once the family can attend."}]
            sent = time.perf_counter()
            resp = http.put(f"{base_url('careplan')}/CarePlan/{plan['id']}", data=json.dumps(plan), timeout=10,
                            headers={"If-Match": f'W/"{plan["meta"]["versionId"]}"'})
            accepted_at = time.time()
            if resp.status_code != 200:
                raise RuntimeError(f"revision {n} refused: {resp.status_code} {resp.text[:300]}")
            put_ms.append(time.perf_counter() - sent)
            plan = resp.json()
            arrived, seen = wait_notification(receiver, seen, n)
            if n > warm_up:
                latencies.append(arrived - accepted_at)
        return {"revisions": revisions, "fanout_ms": summary_ms(latencies), "put_ms": summary_ms(put_ms[warm_up:]),
                "subscription": f"Subscription/{sub['id']}", "content": "id-only"}
    finally:
        receiver.stop()


def wait_notification(receiver: RemoteReceiver, seen: int, number: int, timeout: float = 30) -> tuple[float, int]:
    """The arrival time (time.time()) of the notification carrying event `number`, and how many were read."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for item in receiver.received(seen):
            seen += 1
            bundle = json.loads(item["body"])
            if notification_status(bundle)["type"] == "event-notification" and number in event_numbers(bundle):
                return item["t"], seen
        time.sleep(0.005)
    raise TimeoutError(f"notification for revision {number} not received within {timeout:.0f} s")
