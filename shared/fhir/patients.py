"""Patient-facing apps: a token bound to one Patient (its `patient` claim, the SMART launch context) is confined
to that patient's compartment, decided in one place and consulted on every path, as a partner's rules are
(shared/fhir/partners.py).

Here, a type is in the compartment when it is Patient (the one with the patient's id) or refers to the patient
through its `patient` (or else `subject`) reference parameter (shared/fhir/compartment.py). To a patient-bound
caller, a resource of such a type outside the compartment is a resource that does not exist: 404 where a read
names it, absent from searches, includes, chains, `$everything` and exports, with totals that count only what it
may see; writing one, or writing anything that would leave the compartment, is 403. A catalogue that anyone may
read (the Questionnaires) stays readable; every other type (audit records, Subscriptions) is 403 to it.
"""
from __future__ import annotations

from typing import Any

from shared.auth import current_principal
from shared.fhir.outcome import FhirError
from shared.fhir.partners import VERBS, PartnerAccess
from shared.fhir.search import SearchParam, reference_in, values_at

NOT_IN_COMPARTMENT = frozenset({"AuditEvent"})  # as in shared/fhir/compartment.py
# What a patient-bound token may call: reads of its own compartment. Every other operation changes or discloses
# what is not the patient's alone (graduation, subscriptions' notifications, sweeps).
PATIENT_OPERATIONS = frozenset({"everything", "export", "validate"})


def caller_patient() -> str | None:
    """The id of the one Patient the current caller's token is bound to, if any."""
    principal = current_principal.get()
    return principal.patient if principal is not None else None


def compartment_param(rdef: Any) -> tuple[bool, SearchParam | None]:
    """Whether the type is in the patient compartment, and the reference parameter naming the patient (None for
    Patient itself)."""
    if rdef.type == "Patient":
        return True, None
    if rdef.type in NOT_IN_COMPARTMENT:
        return False, None
    param = rdef.param("patient") or rdef.param("subject")
    return (True, param) if param is not None and param.kind == "reference" else (False, None)


def refused(what: str) -> FhirError:
    return FhirError.single(403, f"a token bound to one patient may not {what}", code="forbidden")


def catalogue(rdef: Any) -> bool:
    return rdef.partner is PartnerAccess.READ


def patient_where(rdef: Any, why: str = "use") -> list[tuple[str, list]]:
    """The condition confining a patient-bound caller's search of this type to its compartment; 403 for a type
    that is neither in the compartment nor a catalogue."""
    patient = caller_patient()
    if patient is None:
        return []
    inside, param = compartment_param(rdef)
    if inside:
        return [("r.id IN (?)", [patient])] if param is None else [reference_in(param.name, [f"Patient/{patient}"])]
    if catalogue(rdef):
        return []
    raise refused(f"{why} {rdef.type} here")


def in_compartment(rdef: Any, resource: dict[str, Any], patient: str) -> bool:
    inside, param = compartment_param(rdef)
    if not inside:
        return False
    if param is None:
        return resource.get("id") == patient
    wanted = f"Patient/{patient}"
    return any(isinstance(v, dict) and isinstance(v.get("reference"), str)
               and v["reference"].split("/_history/")[0] == wanted for v in values_at(resource, param.path))


def patient_sees(rdef: Any, resource: dict[str, Any]) -> bool:
    """Whether a patient-bound caller may see this resource (any other caller may, as far as this rule goes)."""
    patient = caller_patient()
    if patient is None:
        return True
    return in_compartment(rdef, resource, patient) or (catalogue(rdef) and not compartment_param(rdef)[0])


def check_write(rdef: Any, resource: dict[str, Any] | None, previous: dict[str, Any] | None) -> None:
    """403 unless what a patient-bound caller writes (and what it replaces or deletes) is in its compartment."""
    patient = caller_patient()
    if patient is None:
        return
    for version in (previous, resource):
        if version is not None and not in_compartment(rdef, version, patient):
            raise refused(f"write {rdef.type} outside its own compartment")


def check_operation(name: str) -> None:
    if caller_patient() is not None and name not in PATIENT_OPERATIONS:
        raise refused(f"call ${name}")


def check_request(types: dict[str, Any], pairs: list[tuple[str, str]], operation: str | None) -> None:
    """Refuse (403), before it runs, what a patient-bound caller's request may not do at all: an operation other
    than reading its own record, the history of everything, a type outside the compartment (but a catalogue's
    reads). What remains is confined to the compartment where it runs."""
    if caller_patient() is None:
        return
    if operation is not None:
        check_operation(operation)
    for rtype, permission in pairs:
        if rtype == "*" and operation is None:
            raise refused("read the history of all resources")
        rdef = types.get(rtype)
        if rdef is not None and not compartment_param(rdef)[0] and not (catalogue(rdef) and permission in "rs"):
            raise refused(f"{VERBS.get(permission, 'use')} {rtype} here")
