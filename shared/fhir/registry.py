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

from shared.auth import current_principal
from shared.fhir.operations import OperationParameter
from shared.fhir.outcome import FhirError
from shared.fhir.params import AUDIT_EVENT
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
PARTNER_TAG = "https://iop-suite.org/fhir/CodeSystem/referral-partner"


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
    # A referral partner's token (`partner` claim) sees only what it submitted of this type.
    partner_scoped: bool = False

    def natural_criteria(self, resource: dict[str, Any]) -> str | None:
        if self.natural_key is None:
            return None
        for ident in resource.get(self.natural_key) or []:
            if isinstance(ident, dict) and ident.get("system") and ident.get("value"):
                return f"{self.natural_key}={ident['system']}|{ident['value']}"
        return None

    def param(self, name: str) -> SearchParam | None:
        return next((p for p in (*COMMON_PARAMS, *self.params) if p.name == name), None)

    @property
    def all_params(self) -> list[SearchParam]:
        return [*COMMON_PARAMS, *self.params]


@dataclass(frozen=True)
class Operation:
    """A FHIR operation such as CarePlan/{id}/$graduate; handler(request_context) -> (status, body)."""

    name: str
    type: str | None
    instance: bool
    handler: Callable[..., tuple[int, dict]]
    doc: str = ""
    method: str = "POST"  # GET: affectsState=false, so it may run on GET as well as POST
    permission: str = ""  # SMART permission letter it needs; default r for GET, u for POST
    parameters: tuple[OperationParameter, ...] = ()  # its `in` parameters: nothing else is accepted

    @property
    def needs(self) -> str:
        return self.permission or ("r" if self.method == "GET" else "u")

    @property
    def affects_state(self) -> bool:
        return self.method != "GET"


class Registry:
    def __init__(self, service: str) -> None:
        self.service = service
        self.types: dict[str, ResourceDef] = {}
        self.operations: dict[tuple[str | None, bool, str], Operation] = {}
        # Every service keeps its own audit trail of who read or changed patient data (shared/access.py).
        self.add(ResourceDef("AuditEvent", AUDIT_EVENT, read_only=True,
                             doc="Who read or changed what, when, with what outcome"))

    def add(self, rdef: ResourceDef) -> ResourceDef:
        self.types[rdef.type] = rdef
        return rdef

    def add_operation(self, op: Operation) -> None:
        self.operations[(op.type, op.instance, op.name)] = op

    def get(self, rtype: str) -> ResourceDef:
        rdef = self.types.get(rtype)
        if rdef is None:
            raise FhirError.single(404, f"resource type {rtype} is not served by the {self.service} service",
                                   code="not-supported")
        return rdef


def caller_partner() -> str | None:
    """The referral partner the current caller acts for, if any."""
    principal = current_principal.get()
    return principal.partner if principal is not None and principal.partner else None


def partner_of_caller(rdef: ResourceDef) -> str | None:
    """The referral partner the current caller acts for, when this type is confined per partner."""
    return caller_partner() if rdef.partner_scoped else None


def owned_by(resource: dict[str, Any], partner: str) -> bool:
    return any(t.get("system") == PARTNER_TAG and t.get("code") == partner
               for t in (resource.get("meta") or {}).get("tag", []))


def tag_partner(meta: dict[str, Any], partner: str) -> dict[str, Any]:
    tags = [t for t in meta.get("tag", []) if t.get("system") != PARTNER_TAG]
    return {**meta, "tag": [*tags, {"system": PARTNER_TAG, "code": partner}]}


class Repository:
    """Writes resources of a registry through validation, rules, index and hooks."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def create(self, tx: Transaction, resource: dict[str, Any], rid: str | None = None,
               validated: bool = False) -> Stored:
        rdef = self.registry.get(resource.get("resourceType", ""))
        if not validated:
            validate_resource(resource, rdef.type)
        return self._write(tx, rdef, rid or str(uuid.uuid4()), resource, None, expected_version=0)

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
               expected_version: int | None) -> Stored:
        live_previous = previous if previous and not previous.deleted else None
        for rule in rdef.before_write:
            rule(tx, resource, live_previous)
        body = {k: v for k, v in resource.items() if k != "meta"}
        if resource.get("meta"):
            body["meta"] = {k: v for k, v in resource["meta"].items() if k not in ("versionId", "lastUpdated")}
        partner = partner_of_caller(rdef)
        if partner is not None:
            if live_previous is not None and not owned_by(live_previous.resource, partner):
                raise FhirError.single(404, f"{rdef.type}/{rid} is not known", code="not-found")
            body["meta"] = tag_partner(body.get("meta") or {}, partner)
        stored = tx.write(rdef.type, rid, body, [], expected_version)
        tx.write_index(rdef.type, rid, index_rows(stored.resource, [*rdef.params, TAG_PARAM]))
        for hook in rdef.after_write:
            hook(tx, stored, live_previous)
        return stored

    def delete(self, tx: Transaction, rtype: str, rid: str) -> Stored | None:
        rdef = self.registry.get(rtype)
        current = tx.read(rtype, rid)
        if current is not None and not current.deleted:
            partner = partner_of_caller(rdef)
            if partner is not None and not owned_by(current.resource, partner):
                raise FhirError.single(404, f"{rtype}/{rid} is not known", code="not-found")
            for rule in rdef.before_delete:
                rule(tx, current)
        return tx.delete(rtype, rid)
