"""`Patient/{id}/$everything`: what this service holds about one patient (its compartment here), as a paged
searchset. `_type` narrows it to some types, `_since` to what changed since an instant; types the caller's
scopes do not allow reading are left out (or refused, 403, when `_type` names them)."""
from __future__ import annotations

from typing import Any

from shared.fhir import bundles
from shared.fhir.compartment import compartment_types, confined, of_patients
from shared.fhir.dates import date_range
from shared.fhir.grants import granted, require
from shared.fhir.interactions import FhirApi, visible
from shared.fhir.numbers import parse_int
from shared.fhir.operations import OperationParameter
from shared.fhir.outcome import FhirError, Issue
from shared.fhir.patients import caller_patient
from shared.fhir.query import DEFAULT_COUNT, MAX_COUNT, MAX_OFFSET
from shared.fhir.registry import Operation
from shared.fhir.store import Page, Stored
from shared.fhir.validation import check_id

PARAMETERS = (OperationParameter("_since", ("valueInstant",)), OperationParameter("_type", ("valueString",)),
              OperationParameter("_count", ("valueInteger",)), OperationParameter("_offset", ("valueInteger",)))
DEFINITION = "http://hl7.org/fhir/OperationDefinition/Patient-everything"


def since_condition(raw: str) -> tuple[str, list]:
    bounds = date_range(raw)
    if bounds is None or len(raw) < 10:
        raise FhirError(400, [Issue("_since must be a FHIR instant such as 2025-03-04T10:00:00Z",
                                    expression="_since")])
    return "r.last_updated>=?", [bounds[0]]


def chosen_types(available: dict[str, str | None], raw: str | None, why: str) -> dict[str, str | None]:
    """The compartment types asked for (`_type`), each allowed; without `_type`, the allowed ones."""
    if raw is None:
        return {t: p for t, p in available.items() if granted(t, "r")}
    wanted = [t for t in raw.split(",") if t]
    unknown = [t for t in wanted if t not in available]
    if unknown or not wanted:
        raise FhirError(400, [Issue(f"_type: {', '.join(unknown)[:80] or 'empty'} is not in a patient's compartment "
                                    f"here; it holds {', '.join(available)}", code="not-supported",
                                    expression="_type")])
    for t in wanted:
        require(t, "r", why)
    return {t: available[t] for t in wanted}


def _arguments(args: list[tuple[str, str]], body: dict[str, Any] | None) -> dict[str, str]:
    given = dict(args)
    for p in (body or {}).get("parameter", []):
        given[p["name"]] = str(next(v for k, v in p.items() if k.startswith("value")))
    return given


def everything(api: FhirApi, rid: str | None = None, args: list[tuple[str, str]] = (),
               body: dict[str, Any] | None = None, **_: Any) -> tuple[int, dict]:
    check_id(rid or "")
    given = _arguments(list(args), body)
    if caller_patient() not in (None, rid):  # a patient app's own record only, as if no other existed
        raise FhirError.single(404, f"Patient/{rid} is not known", code="not-found")
    if "Patient" in api.registry.types:
        patient = api.store.read("Patient", rid)
        if patient is None or patient.deleted or not visible(api.registry.types["Patient"], patient):
            raise FhirError.single(404, f"Patient/{rid} is not known", code="not-found")
    types = chosen_types(compartment_types(api.registry), given.get("_type"), "$everything")
    count = parse_int(given.get("_count", str(DEFAULT_COUNT)), "_count", 0, MAX_COUNT, cap=True)
    offset = parse_int(given.get("_offset", "0"), "_offset", 0, MAX_OFFSET, cap=True)
    since = [since_condition(given["_since"])] if "_since" in given else []
    wheres = {t: [of_patients(t, p, [rid]), *since, *confined(api.registry.types[t])] for t, p in types.items()}
    totals = {t: api.store.search(t, w, "r.created_seq", 0, 0).total or 0 for t, w in wheres.items()}
    items: list[Stored] = []
    skip = offset
    for rtype, where in wheres.items():  # the page may span types: skip whole types before it, then read
        if skip >= totals[rtype]:
            skip -= totals[rtype]
            continue
        if len(items) < count:
            items += api.store.search(rtype, where, "r.created_seq", count - len(items), skip, total=False).items
        skip = 0
    used = [(k, given[k]) for k in ("_type", "_since") if k in given]
    url = f"{api.base}/Patient/{rid}/$everything"
    return 200, bundles.searchset(api.base, url, used, Page(sum(totals.values()), items), count, offset)


EVERYTHING = Operation("everything", "Patient", True, everything, method="GET", parameters=PARAMETERS,
                       definition=DEFINITION,
                       doc="What this service holds about the patient (its compartment here): _type, _since, "
                           "_count, _offset; paged")
