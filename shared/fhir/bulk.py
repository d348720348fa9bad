"""FHIR Bulk Data Access 2.0 `$export`: system (`/$export`), `Patient/$export` and `Group/{id}/$export`.

The async pattern: a kick-off with `Prefer: respond-async` answers 202 with the status URL in Content-Location;
the status URL answers 202 with X-Progress while the job runs, then 200 with the manifest (application/json)
naming one NDJSON file per type; DELETE on it cancels the job and removes its files. Only the client that
started a job (the same token subject, client and partner) sees its status and files; to any other it does not
exist. The job's state is in the store (named values `bulk:job:<id>`) and its files under the var dir, so any
web process of the service answers for it; it runs in a thread of the process that took it, streaming each type
from the store a page at a time, and another process takes over a job whose runner stopped beating.
"""
from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from shared.auth import current_principal
from shared.fhir.compartment import compartment_types, of_patients, stream
from shared.fhir.everything import chosen_types, since_condition
from shared.fhir.grants import granted, require
from shared.fhir.interactions import FhirApi, visible
from shared.fhir.operations import OperationParameter
from shared.fhir.outcome import FhirError, Issue
from shared.fhir.patients import caller_patient
from shared.fhir.query import parse_query
from shared.fhir.registry import Operation
from shared.fhir.store import Store
from shared.fhir.util import now_instant
from shared.fhir.validation import check_id
from shared.logs import get_logger

log = get_logger("iop.bulk")
PREFIX = "bulk:job:"
NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = {"application/fhir+ndjson", "application/ndjson", "ndjson"}
STALE_S = 30.0  # a running job whose heartbeat is older than this has lost its runner
BEAT_EVERY = 500  # resources written between heartbeats (and cancellation checks)
NOT_EXPORTED = frozenset({"Subscription"})  # holds EHR endpoints and secrets, not patient data
PARAMETERS = tuple(OperationParameter(n, ("valueString", "valueInstant")) for n in
                   ("_outputFormat", "_since", "_type")) + (
    OperationParameter("_typeFilter", ("valueString",), max=None),)
DEFINITIONS = {"system": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
               "patient": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
               "group": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"}


@dataclass
class Job:
    id: str
    owner: dict[str, str | None]
    request: str
    kind: str  # system | patient | group
    types: list[str]
    transaction_time: str
    since: str | None = None
    type_filters: dict[str, list[str]] = field(default_factory=dict)
    group: str | None = None
    patient: str | None = None  # a patient-bound caller's export: that patient's compartment alone
    status: str = "in-progress"  # in-progress | complete | failed | cancelled
    progress: str = "queued"
    output: list[dict[str, Any]] = field(default_factory=list)
    runner: str = ""
    heartbeat: float = 0.0

    @classmethod
    def load(cls, store: Store, job_id: str) -> Job | None:
        raw = store.get_value(PREFIX + job_id)
        return cls(**json.loads(raw)) if raw else None

    def save(self, store: Store) -> None:
        with store.transaction() as tx:
            tx.put_value(PREFIX + self.id, json.dumps(asdict(self)))


def owner() -> dict[str, str | None]:
    principal = current_principal.get()
    if principal is None:
        return {"subject": None, "client": None, "partner": None}
    found = {"subject": principal.subject, "client": principal.client_id, "partner": principal.partner}
    return {**found, "patient": principal.patient} if principal.patient else found


def _bad(message: str, expression: str | None = None, code: str = "invalid") -> FhirError:
    return FhirError(400, [Issue(message, code=code, expression=expression)])


# -- kick-off --------------------------------------------------------------------------------------------


def _given(args: list[tuple[str, str]], body: dict[str, Any] | None) -> list[tuple[str, str]]:
    given = list(args)
    for p in (body or {}).get("parameter", []):
        given.append((p["name"], str(next(v for k, v in p.items() if k.startswith("value")))))
    return given


def _exportable(api: FhirApi, kind: str) -> dict[str, str | None]:
    if kind == "system":
        return {t: None for t in sorted(api.registry.types) if t not in NOT_EXPORTED}
    return compartment_types(api.registry)


def _type_filters(api: FhirApi, raw: list[str], types: list[str]) -> dict[str, list[str]]:
    """`_typeFilter=Type?criteria`, each checked now (a bad one is 400 at kick-off, not a failed job)."""
    filters: dict[str, list[str]] = {}
    for item in raw:
        rtype, _, criteria = item.partition("?")
        if rtype not in types or not criteria:
            raise _bad(f"_typeFilter {item[:60]!r}: give Type?criteria for a type being exported", "_typeFilter")
        parse_query(api.registry.types[rtype], parse_qsl(criteria, keep_blank_values=True), True, api.registry)
        filters.setdefault(rtype, []).append(criteria)
    return filters


def kick_off(api: FhirApi, kind: str, args: list[tuple[str, str]], body: dict[str, Any] | None,
             headers: dict[str, str], url: str, group: str | None = None) -> tuple[int, None, dict[str, str]]:
    if "respond-async" not in headers.get("Prefer", ""):
        raise _bad("$export runs asynchronously: send Prefer: respond-async", code="not-supported")
    patient = caller_patient()
    if patient is not None and kind != "patient":
        raise FhirError.single(403, "a token bound to one patient may export its own compartment only "
                                    "(Patient/$export)", code="forbidden")
    given = _given(args, body)
    one = {k: v for k, v in given if k != "_typeFilter"}
    if one.get("_outputFormat", NDJSON) not in OUTPUT_FORMATS:
        raise _bad("_outputFormat must be application/fhir+ndjson", "_outputFormat", "not-supported")
    available = _exportable(api, kind)
    types = chosen_types(available, one.get("_type"), "$export")
    if not types:
        raise FhirError.single(403, "the token's scopes allow reading none of the types exported here",
                               code="forbidden")
    job = Job(str(uuid.uuid4()), owner(), url, kind, list(types), now_instant(),
              since=since_condition(one["_since"])[1][0] if "_since" in one else None,
              type_filters=_type_filters(api, [v for k, v in given if k == "_typeFilter"], list(types)),
              group=group, patient=patient)
    job.runner, job.heartbeat = str(uuid.uuid4()), time.time()
    job.save(api.store)
    Exporter(api).start(job)
    return 202, None, {"Content-Location": f"{api.base}/_export/{job.id}"}


def system_export(api: FhirApi, args: list[tuple[str, str]] = (), body: dict | None = None,
                  headers: dict[str, str] | None = None, url: str = "", **_: Any) -> tuple[int, None, dict[str, str]]:
    return kick_off(api, "system", list(args), body, headers or {}, url)


def patient_export(api: FhirApi, args: list[tuple[str, str]] = (), body: dict | None = None,
                  headers: dict[str, str] | None = None, url: str = "", **_: Any) -> tuple[int, None, dict[str, str]]:
    return kick_off(api, "patient", list(args), body, headers or {}, url)


def group_export(api: FhirApi, rid: str | None = None, args: list[tuple[str, str]] = (), body: dict | None = None,
                 headers: dict[str, str] | None = None, url: str = "", **_: Any) -> tuple[int, None, dict[str, str]]:
    check_id(rid or "")
    require("Group", "r", "Group/$export")
    group = api.store.read("Group", rid)
    if group is None or group.deleted or not visible(api.registry.types["Group"], group):
        raise FhirError.single(404, f"Group/{rid} is not known", code="not-found")
    return kick_off(api, "group", list(args), body, headers or {}, url, group=rid)


def operations(groups: bool) -> list[Operation]:
    """The $export operations of a service (Group/{id}/$export where it holds Groups)."""
    ops = [Operation("export", None, False, system_export, method="GET", parameters=PARAMETERS,
                     definition=DEFINITIONS["system"], doc="Bulk Data 2.0 export of everything held here "
                     "(Prefer: respond-async; _type, _since, _typeFilter)"),
           Operation("export", "Patient", False, patient_export, method="GET", parameters=PARAMETERS,
                     definition=DEFINITIONS["patient"], doc="Bulk Data 2.0 export of every patient's compartment")]
    if groups:
        ops.append(Operation("export", "Group", True, group_export, method="GET", parameters=PARAMETERS,
                             definition=DEFINITIONS["group"],
                             doc="Bulk Data 2.0 export of the compartments of a Group's member Patients"))
    return ops


# -- the job --------------------------------------------------------------------------------------------

class Cancelled(Exception):
    pass


class Exporter:
    def __init__(self, api: FhirApi) -> None:
        self.api = api

    def directory(self, job_id: str) -> Path:
        return self.api.export_dir / job_id

    def start(self, job: Job) -> None:
        threading.Thread(target=self.run, args=(job.id,), name=f"export-{job.id[:8]}", daemon=True).start()

    def run(self, job_id: str) -> None:
        token = current_principal.set(None)  # the kick-off checked the caller; the job reads as the service
        try:
            job = Job.load(self.api.store, job_id)
            if job is not None:
                self.export(job)
        except Cancelled:
            log.info("export cancelled", job=job_id)
        except Exception as exc:  # noqa: BLE001 - a failed job is reported on its status URL, never lost
            log.error("export failed", job=job_id, error=type(exc).__name__)
            failed = Job.load(self.api.store, job_id)
            if failed is not None and failed.status == "in-progress":
                failed.status, failed.progress = "failed", "failed"
                failed.save(self.api.store)
        finally:
            current_principal.reset(token)

    def export(self, job: Job) -> None:
        folder = self.directory(job.id)
        shutil.rmtree(folder, ignore_errors=True)  # a job taken over starts again
        folder.mkdir(parents=True, exist_ok=True)
        output = []
        for n, rtype in enumerate(job.types, 1):
            job.progress = f"exporting {rtype} ({n} of {len(job.types)})"
            count = self._write_type(job, rtype, folder / f"{n}.ndjson")
            if count:
                output.append({"type": rtype, "url": f"{self.api.base}/_export/{job.id}/{n}.ndjson", "count": count})
        job.status, job.progress, job.output = "complete", "complete", output
        self._commit(job)

    def _wheres(self, job: Job, rtype: str) -> list[list[tuple[str, list]]]:
        """The conditions of each pass over a type: one per `_typeFilter` (their union), per chunk of a group."""
        base = [("r.last_updated>?", [job.since])] if job.since else []
        filters = [parse_query(self.api.registry.types[rtype], parse_qsl(c, keep_blank_values=True), True,
                               self.api.registry).where for c in job.type_filters.get(rtype, [])] or [[]]
        scopes: list[list[tuple[str, list]]] = [[]]
        if job.kind == "group":
            members = group_members(self.api.store, job.group or "")
            param = compartment_types(self.api.registry).get(rtype)
            scopes = [[of_patients(rtype, param, members[i:i + 500])] for i in range(0, len(members), 500)]
        if job.patient:
            scopes = [[of_patients(rtype, compartment_types(self.api.registry).get(rtype), [job.patient])]]
        return [[*base, *f, *s] for f in filters for s in scopes]

    def _write_type(self, job: Job, rtype: str, path: Path) -> int:
        seen: set[str] = set()
        with path.open("w", encoding="utf-8") as out:
            for where in self._wheres(job, rtype):
                for stored in stream(self.api.store, rtype, where):
                    if stored.id in seen:  # in the union of two filters
                        continue
                    seen.add(stored.id)
                    out.write(json.dumps(stored.resource, ensure_ascii=False, separators=(",", ":")) + "\n")
                    if len(seen) % BEAT_EVERY == 0:
                        self._beat(job)
        self._beat(job)
        if not seen:
            path.unlink()
        return len(seen)

    def _beat(self, job: Job) -> None:
        job.heartbeat = time.time()
        self._commit(job)

    def _commit(self, job: Job) -> None:
        """Save the job's state, unless it was cancelled or taken over meanwhile (then stop: Cancelled)."""
        with self.api.store.transaction() as tx:
            raw = tx.get_value(PREFIX + job.id)
            latest = json.loads(raw) if raw else {}
            if latest.get("status") != "in-progress" or latest.get("runner") != job.runner:
                raise Cancelled
            tx.put_value(PREFIX + job.id, json.dumps(asdict(job)))


def group_members(store: Store, group_id: str) -> list[str]:
    group = store.read("Group", group_id)
    members = (group.resource.get("member") or []) if group and not group.deleted else []
    refs = [m.get("entity", {}).get("reference", "") for m in members if not m.get("inactive")]
    return list(dict.fromkeys(r.split("/", 1)[1] for r in refs if r.startswith("Patient/") and r.count("/") == 1))


# -- status, files, cancel ------------------------------------------------------------------------------


def own_job(api: FhirApi, job_id: str) -> Job:
    """The caller's job; 404 for one that does not exist, was cancelled, or is another client's."""
    job = Job.load(api.store, job_id) if len(job_id) == 36 else None
    if job is None or job.status == "cancelled" or job.owner != owner():
        raise FhirError.single(404, "no such export job", code="not-found")
    return job


def take_over_if_stale(api: FhirApi, job: Job, start: Callable[[Job], None]) -> None:
    """A job whose runner stopped beating (its process died) is started again here."""
    if job.status != "in-progress" or time.time() - job.heartbeat < STALE_S:
        return
    with api.store.transaction() as tx:
        raw = tx.get_value(PREFIX + job.id)
        latest = Job(**json.loads(raw)) if raw else None
        if latest is None or latest.heartbeat != job.heartbeat:
            return  # another process took it first
        latest.runner, latest.heartbeat = str(uuid.uuid4()), time.time()  # each run of a job is told apart
        tx.put_value(PREFIX + job.id, json.dumps(asdict(latest)))
    log.info("export taken over", job=job.id)
    start(latest)


def status(api: FhirApi, job_id: str) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
    job = own_job(api, job_id)
    take_over_if_stale(api, job, Exporter(api).start)
    if job.status == "in-progress":
        return 202, None, {"X-Progress": job.progress, "Retry-After": "1"}
    if job.status == "failed":
        raise FhirError.single(500, "the export failed; start it again", code="exception")
    return 200, {"transactionTime": job.transaction_time, "request": job.request, "requiresAccessToken": True,
                 "output": job.output, "error": []}, {"Expires": "0"}


def cancel(api: FhirApi, job_id: str) -> None:
    job = own_job(api, job_id)
    job.status = "cancelled"
    job.save(api.store)
    shutil.rmtree(Exporter(api).directory(job.id), ignore_errors=True)


def file_path(api: FhirApi, job_id: str, name: str) -> Path:
    job = own_job(api, job_id)
    listed = {o["url"].rsplit("/", 1)[1] for o in job.output}
    path = Exporter(api).directory(job.id) / name
    if job.status != "complete" or name not in listed or not path.is_file():
        raise FhirError.single(404, "no such export file", code="not-found")
    return path


def exported_types(api: FhirApi) -> list[str]:
    return [t for t in _exportable(api, "system") if granted(t, "r")]
