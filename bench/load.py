"""Open-loop intake load: partner submissions sent at a fixed rate by a bounded pool of HTTP clients.

Each submission has a due time (start + i / rate); a pacer hands it to the pool at that time,
so a slow server shows up as latency (measured from the due time, client-side queueing included)
instead of silently lowering the offered rate.
"""
from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

from services.intake.samples import partner_submission

PATIENT_LOCATION = re.compile(r'"location"\s*:\s*"Patient/([^/"]+)')
HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


@dataclass
class Submission:
    due: float
    started: float = 0.0
    finished: float = 0.0
    status: int = 0
    patient: str = ""
    error: str = ""

    @property
    def accepted(self) -> bool:
        return self.status == 200 and bool(self.patient)

    @property
    def latency_s(self) -> float:
        """As the partner sees it: from when the submission was due until the answer."""
        return self.finished - self.due

    @property
    def service_s(self) -> float:
        return self.finished - self.started


def bodies(count: int) -> list[bytes]:
    """Distinct submissions (new Patient identifier and urn:uuids each), serialized up front."""
    return [json.dumps(partner_submission(), separators=(",", ":")).encode() for _ in range(count)]


class IntakeLoad:
    def __init__(self, intake_base: str, auth: dict[str, str], clients: int = 48, timeout_s: float = 10.0) -> None:
        self.url, self.auth, self.clients, self.timeout_s = intake_base, auth, clients, timeout_s
        self._local = threading.local()
        self.interrupted = threading.Event()

    def _session(self) -> requests.Session:
        if getattr(self._local, "session", None) is None:
            self._local.session = requests.Session()
            self._local.session.headers.update({**HEADERS, **self.auth})
        return self._local.session

    def submit(self, body: bytes, sub: Submission | None = None) -> Submission:
        sub = sub or Submission(time.perf_counter())
        sub.started = time.perf_counter()
        try:
            resp = self._session().post(self.url, data=body, timeout=self.timeout_s)
            sub.finished, sub.status = time.perf_counter(), resp.status_code
            found = PATIENT_LOCATION.search(resp.text) if resp.status_code == 200 else None
            sub.patient = found.group(1) if found else ""
            if not found:
                sub.error = f"HTTP {resp.status_code}"
        except requests.RequestException as exc:
            sub.finished, sub.error = time.perf_counter(), type(exc).__name__
        return sub

    def run(self, rate: float, payloads: list[bytes], into: list[Submission] | None = None) -> list[Submission]:
        """Send every payload at `rate` per second; returns once every answer is in.

        Submissions are appended to `into` as they are sent, for whoever samples progress meanwhile.
        """
        subs: list[Submission] = [] if into is None else into
        with ThreadPoolExecutor(self.clients, thread_name_prefix="client") as pool:
            start = time.perf_counter() + 0.05
            for i, body in enumerate(payloads):
                if self.interrupted.is_set():
                    break
                due = start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                sub = Submission(due)
                subs.append(sub)
                pool.submit(self.submit, body, sub)
        return subs
