"""What the demo needs around the journey: the running suite's addresses, tokens, checks and printing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import requests
from kafka import KafkaAdminClient

from bench.watch import Seen, TopicWatcher
from shared.config import ROOT, SERVICE_PORTS, kafka_bootstrap

BOOTSTRAP = kafka_bootstrap()
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
PARTNER_SCOPES = "system/Patient.cr system/ServiceRequest.cr system/QuestionnaireResponse.cr"


class StepFailed(Exception):
    """A step of the journey did not happen within its deadline, or was refused."""


def base_url(service: str) -> str:
    port = os.environ.get(f"IOP_{service.upper()}_PORT", SERVICE_PORTS[service])
    return f"http://127.0.0.1:{port}/fhir"


def token(scopes: str, subject: str, partner: str | None = None) -> str:
    """A development token from `iop token`, signed with the secret the running services use."""
    argv = [sys.executable, "-m", "shared.cli", "token", "--scope", scopes, "--sub", subject]
    done = subprocess.run(argv + (["--partner", partner] if partner else []), capture_output=True, text=True,
                          cwd=ROOT, timeout=30)
    if done.returncode != 0:
        raise StepFailed(f"could not mint a development token: {done.stderr.strip()[-300:]}")
    return done.stdout.strip()


def session(bearer: str) -> requests.Session:
    s = requests.Session()
    s.headers.update({**FHIR_JSON, "Authorization": f"Bearer {bearer}"})
    return s


def check_running() -> None:
    """Every service ready and the broker answering, or a clear message to start the suite."""
    for service in SERVICE_PORTS:
        url = base_url(service).removesuffix("/fhir") + "/readyz"
        try:
            resp = requests.get(url, timeout=3)
        except requests.RequestException as exc:
            raise StepFailed(f"{service} is not answering at {url} ({type(exc).__name__}): "
                             "run `make run` first") from None
        if resp.status_code != 200:
            raise StepFailed(f"{service} is up but not ready at {url} ({resp.text[:200]}): run `make run` first")
    try:
        KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=5000).close()
    except Exception as exc:  # noqa: BLE001 - any failure means the broker is not there
        raise StepFailed(f"no Kafka broker at {BOOTSTRAP} ({type(exc).__name__}): run `make run` first") from None


def check_consumers(timeout: float = 15) -> None:
    """Each worker's consumer group holds partitions; one that holds none would silently consume nothing."""
    groups = ["iop-careplan", "iop-encounters", "iop-aftercare"]
    deadline = time.monotonic() + timeout
    while True:
        admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=5000)
        try:
            described = admin.describe_groups(groups)
        finally:
            admin.close()
        idle = [g for g, info in described.items()
                if not any((m.get("member_assignment") or {}).get("assigned_partitions") for m in info["members"])]
        if not idle:
            return
        if time.monotonic() > deadline:
            raise StepFailed(f"consumer group(s) {', '.join(idle)} hold no partitions, so those workers would "
                             "consume nothing: see var/log/*-worker.log, then `make stop && make run`")
        time.sleep(0.5)


def expect(resp: requests.Response, status: int, what: str) -> dict[str, Any]:
    if resp.status_code != status:
        raise StepFailed(f"{what}: HTTP {resp.status_code} (expected {status}): {resp.text[:400]}")
    return resp.json()


def wait_event(watcher: TopicWatcher, ce_type: str, patient: str, count: int = 1, timeout: float = 20) -> list[Seen]:
    try:
        return watcher.wait_for(ce_type, patient, count, timeout)
    except TimeoutError as exc:
        raise StepFailed(f"{exc}; is its worker running? see var/log/") from None


def say(text: str = "") -> None:
    print(text, flush=True)


def show_events(watcher: TopicWatcher, patient: str, since: float) -> None:
    """The records about this patient that arrived on the topics since `since`, grouped when many."""
    seen = [s for s in watcher.seen(key=patient) if s.arrived >= since]
    counts = Counter(s.type for s in seen)
    say("  Events seen on the topics:" if seen else "  Events seen on the topics: none")
    shown: set[str] = set()
    for s in seen:
        if counts[s.type] > 3:
            if s.type not in shown:
                shown.add(s.type)
                say(f"    {s.topic}  {s.type} x{counts[s.type]}  (first {s.headers.get('ce_subject')}, "
                    f"partition {s.partition} @{s.offset})")
            continue
        say(f"    {s.topic}[{s.partition}]@{s.offset}  {s.type:<28} {s.headers.get('ce_subject')}")


def observation_line(obs: dict[str, Any]) -> str:
    code = obs.get("code", {})
    label = code.get("text") or next((c.get("display") or c.get("code") for c in code.get("coding", [])), "?")
    value: Any = obs.get("valueInteger", obs.get("valueString"))
    if "valueQuantity" in obs:
        value = obs["valueQuantity"].get("value")
    if "valueCodeableConcept" in obs:
        concept = obs["valueCodeableConcept"]
        value = concept.get("text") or next((c.get("display") or c.get("code") for c in concept.get("coding", [])), "")
    interpretation = next((c.get("display") or c.get("code") for i in obs.get("interpretation", [])
                           for c in i.get("coding", [])), "")
    return f"{label}: {value}" + (f" ({interpretation})" if interpretation else "")


def compact(resource: dict[str, Any]) -> str:
    return json.dumps(resource, separators=(",", ":"))[:160]
