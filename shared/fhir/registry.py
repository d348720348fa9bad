"""What a service serves: its resource types, their search parameters, hooks and operations.

The Repository is the one path by which a resource is written, from the REST API and from
event handlers alike: validate, apply the type's rules, index, store, then let the type's
hooks add the events that the change causes, all inside the caller's transaction.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.fhir.operations import OperationParameter
from shared.fhir.outcome import FhirError
from shared.fhir.params import AUDIT_EVENT
from shared.fhir.partners import (
    VERBS,
    PartnerAccess,
    confined_to,
    dangling_references,
    not_known,
    owned_by,
    refused,
    tag_partner,
)
from shared.fhir.patients import caller_patient, check_write
from shared.fhir.patients import refused as refused_to_patient
from shared.fhir.search import SearchParam, index_rows
from shared.fhir.store import Stored, Transaction
from shared.fhir.validation import validate_resource

# before_write(tx, new_resource, previous_or_None) may raise FhirError (409, 422) to refuse a change.
BeforeWrite = Callable[[Transaction, dict, Stored | None], None]
# after_write(tx, stored, previous_or_None) adds outbox events or derived writes.
AfterWrite = Callable[[Transaction, Stored, Stored | None], None]
# before_delete(tx, current) may raise FhirError (403, 409) to refuse a delete.
BeforeDelete = Callable[[Transaction, Stored], None]

COMMON_PARAMS = [SearchParam("_id", "token", "id", "logical id"),
                 SearchParam("_lastUpdated", "date", "meta.lastUpdated", "when the resource last changed"),
                 SearchParam("_tag", "token", "meta.tag", "a tag, system|code")]
TAG_PARAM = COMMON_PARAMS[2]


@dataclass
class ResourceDef:
    type: str
    params: list[SearchParam] = field(default_factory=list)
    read_only: bool = False
    before_write: list[BeforeWrite] = field(default_factory=list)
    after_write: list[AfterWrite] = field(default_factory=list)
    before_delete: list[BeforeDelete] = field(default_factory=list)
    doc: str = ""
    # A token search parameter that identifies the real-world thing (e.g. a Patient's identifier):
    # a create without If-None-Exist still matches an existing resource on it, never duplicates it.
    natural_key: str | None = None
    # What a referral partner's token (`partner` claim) may do with this type (shared/fhir/partners.py).
    partner: PartnerAccess = PartnerAccess.NONE

    def natural_criteria(self, resource: dict[str, Any]) -> str | None:
        if self.natural_key is None:
            return None
        for ident in resource.get(self.natural_key) or []:
            if isinstance(ident, dict) and ident.get("system") and ident.get("value"):
                return f"{self.natural_key}={ident['system']}|{ident['value']}"
        return None

    def confined_to(self, permission: str) -> str | None:
        """The partner whose own resources alone the caller may use here, if any; 403 if it may not do this."""
        return confined_to(self.partner, self.type, permission)

    def param(self, name: str) -> SearchParam | None:
        return next((p for p in (*COMMON_PARAMS, *self.params) if p.name == name), None)

    @property
    def all_params(self) -> list[SearchParam]:
        return [*COMMON_PARAMS, *self.params]


@dataclass(frozen=True)
class Operation:
    """A FHIR operation such as CarePlan/{id}/$graduate; handler(request_context) -> (status, body), or
    (status, body, headers)."""

    name: str
    type: str | None
    instance: bool
    handler: Callable[..., tuple[int, dict]]
    doc: str = ""
    method: str = "POST"  # GET: affectsState=false, so it may run on GET as well as POST
    permission: str = ""  # SMART permission letter it needs; default r for GET, u for POST
    partner: bool = False  # whether a referral partner may call it (then the handler confines it to its own)
    parameters: tuple[OperationParameter, ...] = ()  # its `in` parameters: nothing else is accepted
    definition: str = ""  # the canonical OperationDefinition, where FHIR or an IG defines the operation

    @property
    def needs(self) -> str:
        return self.permission or ("r" if self.method == "GET" else "u")

    @property
    def affects_state(self) -> bool:
        return self.method != "GET"


class Registry:
    def __init__(self, service: str, partners: bool = False) -> None:
        """`partners`: referral partners may use this service (each type and operation then says how far)."""
        self.service, self.partners = service, partners
        self.types: dict[str, ResourceDef] = {}
        self.operations: dict[tuple[str | None, bool, str], Operation] = {}
        # Every service keeps its own audit trail of who read or changed patient data (shared/access.py);
        # a partner's requests are tagged with it, so a partner reads the record of its own requests only.
        self.add(ResourceDef("AuditEvent", AUDIT_EVENT, read_only=True,
                             partner=PartnerAccess.OWN if partners else PartnerAccess.NONE,
                             doc="Who read or changed what, when, with what outcome"))

    def add(self, rdef: ResourceDef) -> ResourceDef:
        self.types[rdef.type] = rdef
        return rdef

    def add_operation(self, op: Operation) -> None:
        self.operations[(op.type, op.instance, op.name)] = op

    def check_partner(self, pairs: list[tuple[str, str]], operation: tuple[str, Operation | None] | None) -> None:
        """Refuse (403) a referral partner's request that calls an operation or needs a (type, permission)
        not open to partners; what remains is confined to its own resources where it runs."""
        if not self.partners:
            raise refused(f"use the {self.service} service (referral partners submit to intake)")
        if operation is not None and not (operation[1] is not None and operation[1].partner):
            raise refused(f"call ${operation[0]}")
        for rtype, permission in pairs:
            if rtype == "*":  # the system history would list other partners' resources
                raise refused("read the history of resources other than its own")
            rdef = self.types.get(rtype)
            if rdef is None or not rdef.partner.allows(permission):
                raise refused(f"{VERBS.get(permission, 'use')} {rtype or 'this'} here")

    def owned_types(self) -> set[str]:
        return {t for t, rdef in self.types.items() if rdef.partner is PartnerAccess.OWN}

    def get(self, rtype: str) -> ResourceDef:
        rdef = self.types.get(rtype)
        if rdef is None:
            raise FhirError.single(404, f"resource type {rtype} is not served by the {self.service} service",
                                   code="not-supported")
        return rdef


class Repository:
    """Writes resources of a registry through validation, rules, index and hooks."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def create(self, tx: Transaction, resource: dict[str, Any], rid: str | None = None,
               validated: bool = False) -> Stored:
        rdef = self.registry.get(resource.get("resourceType", ""))
        if not validated:
            validate_resource(resource, rdef.type)
        return self._write(tx, rdef, rid or str(uuid.uuid4()), resource, None, expected_version=0, creating=True)

    def update(self, tx: Transaction, rtype: str, rid: str, resource: dict[str, Any],
               expected_version: int | None = None, validated: bool = False) -> Stored:
        rdef = self.registry.get(rtype)
        if not validated:
            validate_resource(resource, rtype)
        if resource.get("id") not in (None, rid):
            raise FhirError.single(400, f"the resource id does not match the id in the URL ({rid})",
                                   code="invalid", expression=f"{rtype}.id")
        previous = tx.read(rtype, rid)
        return self._write(tx, rdef, rid, resource, previous, expected_version)

    def _write(self, tx: Transaction, rdef: ResourceDef, rid: str, resource: dict, previous: Stored | None,
               expected_version: int | None, creating: bool = False) -> Stored:
        live_previous = previous if previous and not previous.deleted else None
        partner = rdef.confined_to("c" if creating else "u")
        if partner is not None:
            self._confine(tx, rdef, rid, resource, previous, creating, partner)
        check_write(rdef, {**resource, "id": rid}, live_previous.resource if live_previous else None)
        for rule in rdef.before_write:
            rule(tx, resource, live_previous)
        body = {k: v for k, v in resource.items() if k != "meta"}
        if resource.get("meta"):
            body["meta"] = {k: v for k, v in resource["meta"].items() if k not in ("versionId", "lastUpdated")}
        if partner is not None:
            body["meta"] = tag_partner(body.get("meta") or {}, partner)
        stored = tx.write(rdef.type, rid, body, [], expected_version)
        tx.write_index(rdef.type, rid, index_rows(stored.resource, [*rdef.params, TAG_PARAM]))
        for hook in rdef.after_write:
            hook(tx, stored, live_previous)
        return stored

    def _confine(self, tx: Transaction, rdef: ResourceDef, rid: str, resource: dict, previous: Stored | None,
                 creating: bool, partner: str) -> None:
        """A partner updates only what it submitted (an update that would create is as if of another's), and
        refers only to what it may see: anything else answers as if it did not exist."""
        if not creating and (previous is None or not owned_by(previous.resource, partner)):
            raise not_known(rdef.type, rid)
        issues = dangling_references(tx, resource, self.registry.owned_types(), partner)
        if issues:
            raise FhirError(422, issues)

    def delete(self, tx: Transaction, rtype: str, rid: str) -> Stored | None:
        rdef = self.registry.get(rtype)
        current = tx.read(rtype, rid)
        partner = rdef.confined_to("d")
        if partner is not None and (current is None or not owned_by(current.resource, partner)):
            raise not_known(rtype, rid)  # a partner's delete of what does not exist answers the same
        if caller_patient() is not None:  # a patient app deletes only what is in its compartment, and exists
            if current is None or current.deleted:
                raise refused_to_patient(f"delete {rtype} outside its own compartment")
            check_write(rdef, None, current.resource)
        if current is not None and not current.deleted:
            for rule in rdef.before_delete:
                rule(tx, current)
        return tx.delete(rtype, rid)
