"""`_include` and `_revinclude` (with `:iterate`): the resources a searchset carries beside its matches.

`_include=CarePlan:goal[:Goal]` adds what the matches refer to through a reference parameter;
`_revinclude=Goal:subject` adds what refers to the matches. With `:iterate` the same is done again for what
was just added, up to MAX_ROUNDS rounds. Only what this service holds can be included, at most MAX_INCLUDED
resources a page. An include the caller may read nothing of is 403; otherwise what its scopes (or a referral
partner's rules) do not let it read is left out, and a partner sees only its own.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shared.fhir.elements import reference_targets
from shared.fhir.grants import granted, require
from shared.fhir.outcome import FhirError, Issue
from shared.fhir.partners import PARTNER_TAG, owned_by
from shared.fhir.patients import patient_sees, patient_where
from shared.fhir.registry import TAG_PARAM, Registry, ResourceDef
from shared.fhir.search import SearchParam, condition, reference_in, values_at
from shared.fhir.store import Store, Stored

MAX_ROUNDS = 4
MAX_INCLUDED = 1000
CHUNK = 500  # ids or references in one IN list


@dataclass(frozen=True)
class Include:
    source: str  # the type whose reference parameter is followed
    param: SearchParam
    target: str | None  # the referenced type asked for, if any
    reverse: bool
    iterate: bool

    @property
    def text(self) -> str:
        return f"{self.source}:{self.param.name}" + (f":{self.target}" if self.target else "")


def targets_of(registry: Registry, rdef: ResourceDef, param: SearchParam, target: str | None) -> list[str]:
    """The types served here that a reference parameter may point at (`target` alone when given)."""
    if target:
        return [target] if target in registry.types else []
    if param.name == "patient":
        declared: tuple[str, ...] = ("Patient",)
    else:
        declared = () if "." in param.path or "|" in param.path else reference_targets(rdef.type, param.path)
    return [t for t in (declared or registry.types) if t in registry.types]


def _unsupported(key: str, message: str) -> FhirError:
    return FhirError(400, [Issue(f"{key}: {message}", code="not-supported", expression=key)])


def parse_include(registry: Registry, rtype: str, key: str, raw: str, strict: bool) -> Include | None:
    """One `_include`/`_revinclude` value; None for one this service cannot follow, unless strict (400)."""
    name, _, modifier = key.partition(":")
    if modifier not in ("", "iterate", "recurse"):
        raise _unsupported(key, "the only modifier is :iterate")
    parts = raw.split(":")
    try:
        if len(parts) not in (2, 3) or "*" in parts:
            raise _unsupported(key, "give Type:parameter or Type:parameter:TargetType (no wildcard)")
        source = registry.types.get(parts[0])
        param = source.param(parts[1]) if source else None
        if source is None or param is None or param.kind != "reference":
            raise _unsupported(key, f"{raw[:60]!r} names no reference parameter of a type served here")
        if name == "_include" and not modifier and source.type != rtype:
            raise _unsupported(key, f"_include follows the references of the {rtype}s found; use :iterate")
        found = Include(source.type, param, parts[2] if len(parts) == 3 else None, name == "_revinclude",
                        bool(modifier))
        check_access(registry, found, rtype)
        return found
    except FhirError as exc:
        if strict or exc.status != 400:
            raise
        return None


def readable(registry: Registry, rtype: str, permission: str = "r") -> bool:
    """Whether the caller may read (or search) resources of `rtype` here: its scopes, and a partner's rules."""
    if not granted(rtype, permission):
        return False
    try:
        registry.types[rtype].confined_to(permission)
        patient_where(registry.types[rtype])
    except FhirError:
        return False
    return True


def searchable(registry: Registry, rtype: str) -> bool:
    return readable(registry, rtype, "s")


def check_access(registry: Registry, inc: Include, rtype: str) -> None:
    """403 when the caller may read none of the types the include can add; of the others, what it may not read
    is left out of the results."""
    if inc.reverse:
        types = [inc.source]
    else:
        types = targets_of(registry, registry.types[inc.source], inc.param, inc.target)
    if types and not any(readable(registry, t) for t in types):
        require(types[0], "r", f"{'_revinclude' if inc.reverse else '_include'}={inc.text}")
        registry.types[types[0]].confined_to("r")


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


def _partner_where(rdef: ResourceDef) -> list[tuple[str, list]]:
    partner = rdef.confined_to("r")
    return [*([condition(TAG_PARAM, "", f"{PARTNER_TAG}|{partner}")] if partner else []), *patient_where(rdef)]


def _referenced(inc: Include, frontier: list[Stored]) -> dict[str, list[str]]:
    """The `Type/id`s that the frontier's resources of the source type refer to, by type."""
    wanted: dict[str, list[str]] = {}
    for stored in frontier:
        if stored.type != inc.source:
            continue
        for value in values_at(stored.resource, inc.param.path):
            reference = value.get("reference") if isinstance(value, dict) else None
            if not isinstance(reference, str) or reference.count("/") != 1 or ":" in reference:
                continue  # contained (#x), absolute and urn: references name nothing stored here
            rtype, rid = reference.split("/")
            if inc.target in (None, rtype) and rid:
                wanted.setdefault(rtype, []).append(rid)
    return wanted


class Includer:
    def __init__(self, store: Store, registry: Registry) -> None:
        self.store, self.registry = store, registry

    def forward(self, inc: Include, frontier: list[Stored], room: int) -> list[Stored]:
        found: list[Stored] = []
        for rtype, ids in _referenced(inc, frontier).items():
            rdef = self.registry.types.get(rtype)
            if rdef is None or not readable(self.registry, rtype):
                continue
            for chunk in _chunks(list(dict.fromkeys(ids))):
                where = [("r.id IN (" + ",".join("?" * len(chunk)) + ")", chunk), *_partner_where(rdef)]
                found += self.store.search(rtype, where, "r.created_seq", room, 0, total=False).items
        return found

    def reverse(self, inc: Include, frontier: list[Stored], room: int) -> list[Stored]:
        rdef = self.registry.types[inc.source]
        if not readable(self.registry, inc.source):
            return []
        refs = list(dict.fromkeys(f"{s.type}/{s.id}" for s in frontier if inc.target in (None, s.type)))
        found: list[Stored] = []
        for chunk in _chunks(refs):
            where = [reference_in(inc.param.name, chunk), *_partner_where(rdef)]
            found += self.store.search(inc.source, where, "r.created_seq", room, 0, total=False).items
        return found

    def included(self, matches: list[Stored], includes: list[Include]) -> list[Stored]:
        """What the includes add to a page of matches: each resource once, none of the matches, in order found."""
        seen = {(s.type, s.id) for s in matches}
        added: list[Stored] = []
        frontier, rounds = matches, 0
        while frontier and rounds < MAX_ROUNDS and len(added) < MAX_INCLUDED:
            active = [i for i in includes if rounds == 0 or i.iterate]
            fresh: list[Stored] = []
            for inc in active:
                room = MAX_INCLUDED - len(added) - len(fresh)
                for stored in (self.reverse if inc.reverse else self.forward)(inc, frontier, room):
                    if (stored.type, stored.id) not in seen and len(added) + len(fresh) < MAX_INCLUDED:
                        seen.add((stored.type, stored.id))
                        fresh.append(stored)
            added += fresh
            frontier, rounds = fresh, rounds + 1
        return [s for s in added if self._visible(s)]

    def _visible(self, stored: Stored) -> bool:
        if not readable(self.registry, stored.type):
            return False
        rdef = self.registry.types[stored.type]
        partner = rdef.confined_to("r")
        return (partner is None or owned_by(stored.resource, partner)) and patient_sees(rdef, stored.resource)
