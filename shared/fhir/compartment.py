"""A patient's compartment in one service: the Patient itself where the service holds Patients, and every resource
that refers to the patient through its `patient` (or else `subject`) search parameter. Audit records are about
requests, not care, and are not in it. `$everything` and the patient-level `$export` read it."""
from __future__ import annotations

from collections.abc import Iterator

from shared.fhir.partners import PARTNER_TAG
from shared.fhir.patients import patient_where
from shared.fhir.registry import TAG_PARAM, Registry, ResourceDef
from shared.fhir.search import condition, reference_in
from shared.fhir.store import Store, Stored

NOT_IN_COMPARTMENT = frozenset({"AuditEvent"})
PAGE = 500


def compartment_types(registry: Registry) -> dict[str, str | None]:
    """Each type in the patient compartment here, with the reference parameter naming the patient (None for
    Patient itself)."""
    found: dict[str, str | None] = {"Patient": None} if "Patient" in registry.types else {}
    for rtype, rdef in sorted(registry.types.items()):
        param = rdef.param("patient") or rdef.param("subject")
        if rtype not in NOT_IN_COMPARTMENT and rtype != "Patient" and param is not None:
            found[rtype] = param.name
    return found


def confined(rdef: ResourceDef) -> list[tuple[str, list]]:
    """The caller's partner and patient rules as conditions: a partner reads only its own, a patient-bound token
    only its patient's compartment."""
    partner = rdef.confined_to("r")
    return [*([condition(TAG_PARAM, "", f"{PARTNER_TAG}|{partner}")] if partner else []), *patient_where(rdef)]


def of_patients(rtype: str, param: str | None, patients: list[str]) -> tuple[str, list]:
    """The condition selecting the resources of `rtype` in the compartments of these patients."""
    if param is None:
        return "r.id IN (" + ",".join("?" * len(patients)) + ")", list(patients)
    return reference_in(param, [f"Patient/{p}" for p in patients])


def stream(store: Store, rtype: str, where: list[tuple[str, list]], page: int = PAGE) -> Iterator[Stored]:
    """Every live resource of `rtype` meeting `where`, read from the store a page at a time in id order (a keyset,
    so each page costs the same however far in), never all at once."""
    last = ""
    while True:
        items = store.search(rtype, [*where, ("r.id > ?", [last])], "r.id", page, 0, total=False).items
        yield from items
        if len(items) < page:
            return
        last = items[-1].id
