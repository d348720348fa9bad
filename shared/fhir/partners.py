"""Referral partners (tokens with a `partner` claim): what they may do, decided in one place.

Each type a service serves says what a partner may do with it (`ResourceDef.partner`), each operation
whether a partner may call it (`Operation.partner`). Every path consults these rules: the access check
of each request and each Bundle entry (shared/access.py), reads, searches, history and conditional
matches (shared/fhir/interactions.py), and every write (the Repository). To a partner, a resource of a
type it owns that another partner submitted is exactly a resource that does not exist: 404 where a
request names it, absent from searches and conditional matches, refused like a dangling reference
where a write refers to it, so that nothing discloses that it exists.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from enum import Enum
from typing import Any

from shared.auth import current_principal
from shared.fhir.outcome import FhirError, Issue
from shared.fhir.store import Transaction

PARTNER_TAG = "https://iop-suite.org/fhir/CodeSystem/referral-partner"
VERBS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
_bundle_creates: ContextVar[frozenset[str]] = ContextVar("bundle_creates", default=frozenset())


class PartnerAccess(Enum):
    NONE = "none"  # a partner may not use the type at all (403)
    READ = "read"  # a partner may read and search all of it, as anyone may (a catalogue)
    OWN = "own"    # a partner reads and writes what it submitted; what others submitted does not exist for it

    def allows(self, permission: str) -> bool:
        return self is PartnerAccess.OWN or (self is PartnerAccess.READ and permission in ("r", "s"))


def caller_partner() -> str | None:
    """The referral partner the current caller acts for, if any."""
    principal = current_principal.get()
    return principal.partner if principal is not None and principal.partner else None


def owned_by(resource: dict[str, Any], partner: str) -> bool:
    return any(t.get("system") == PARTNER_TAG and t.get("code") == partner
               for t in (resource.get("meta") or {}).get("tag", []))


def tag_partner(meta: dict[str, Any], partner: str) -> dict[str, Any]:
    tags = [t for t in meta.get("tag", []) if t.get("system") != PARTNER_TAG]
    return {**meta, "tag": [*tags, {"system": PARTNER_TAG, "code": partner}]}


def refused(what: str) -> FhirError:
    return FhirError.single(403, f"a referral partner may not {what}", code="forbidden")


def confined_to(access: PartnerAccess, rtype: str, permission: str) -> str | None:
    """The partner whose own resources alone the caller may use of this type; None when the caller is not confined.

    Raises 403 when the caller is a partner that may not do this with the type at all.
    """
    partner = caller_partner()
    if partner is None:
        return None
    if not access.allows(permission):
        raise refused(f"{VERBS.get(permission, 'use')} {rtype} here")
    return partner if access is PartnerAccess.OWN else None


def not_known(rtype: str, rid: str) -> FhirError:
    return FhirError.single(404, f"{rtype}/{rid} is not known", code="not-found")


def idempotency_scope(scope: str) -> str:
    """A partner (or a patient app) repeating a request finds its own first answer only, never another caller's."""
    partner = caller_partner()
    principal = current_principal.get()
    if principal is not None and principal.patient:
        return f"{scope}@patient:{principal.patient}"
    return scope if partner is None else f"{scope}@partner:{partner}"


@contextmanager
def created_together(references: Iterable[str]) -> Iterator[None]:
    """While a transaction Bundle runs: the `Type/id`s it creates. An entry may refer to one written after it (a
    reference cycle); the Bundle is all or nothing, so each exists, as the partner's, once it commits."""
    token = _bundle_creates.set(frozenset(references))
    try:
        yield
    finally:
        _bundle_creates.reset(token)


def dangling_references(tx: Transaction, resource: dict[str, Any], owned_types: set[str],
                        partner: str) -> list[Issue]:
    """An issue for each relative reference to a type the partner owns that names no live resource of its own."""
    found = []
    for path, reference in references(resource, resource.get("resourceType", "")):
        rtype, _, rest = reference.partition("/")
        rid = rest.split("/_history/")[0]
        if rtype not in owned_types or not rid or "/" in rid or f"{rtype}/{rid}" in _bundle_creates.get():
            continue
        target = tx.read(rtype, rid)
        if target is None or target.deleted or not owned_by(target.resource, partner):
            element = path.rsplit(".", 1)[-1].split("[")[0]
            found.append(Issue(f"{element} must reference a {rtype} known to this service", code="invalid",
                               expression=path))
    return found


def references(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """(FHIRPath of the Reference, its reference) for each relative reference (`Type/id`) in a resource."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and "/" in ref and ":" not in ref and "?" not in ref and not ref.startswith("#"):
            yield path, ref
        for key, value in node.items():
            yield from references(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from references(value, f"{path}[{i}]")
