"""The FHIR RESTful interactions, independent of Flask: each returns a Response value."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from shared.fhir import bundles, paging
from shared.fhir.elements import summarised, with_elements
from shared.fhir.grants import require
from shared.fhir.includes import Includer
from shared.fhir.numbers import MAX_NUMBER, whole_number
from shared.fhir.outcome import FhirError, Issue
from shared.fhir.partners import PARTNER_TAG, PartnerAccess, caller_partner, owned_by, refused
from shared.fhir.patch import patched
from shared.fhir.patients import caller_patient, patient_sees, patient_where
from shared.fhir.query import parse_history, parse_query
from shared.fhir.registry import TAG_PARAM, Registry, Repository, ResourceDef
from shared.fhir.search import condition
from shared.fhir.store import Page, Store, Stored, Transaction
from shared.fhir.validation import check_id


@dataclass
class Response:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    stored: Stored | None = None


def visible(rdef: ResourceDef, stored: Stored) -> bool:
    """Whether the caller may see this resource: a referral partner sees only its own of the types it owns, a
    patient-bound token only its patient's compartment."""
    partner = rdef.confined_to("r")
    return (partner is None or owned_by(stored.resource, partner)) and patient_sees(rdef, stored.resource)


def parse_etag(raw: str | None) -> int | None:
    if raw is None:
        return None
    value = whole_number(raw.strip().removeprefix("W/").strip('"'))
    if value is None or not 0 <= value <= MAX_NUMBER:
        raise FhirError.single(400, 'If-Match must be a weak ETag such as W/"3"', code="invalid")
    return value


def http_date(instant: str) -> str:
    """A FHIR instant as an HTTP-date (RFC 9110), the only form a Last-Modified header may take."""
    return format_datetime(datetime.fromisoformat(instant.replace("Z", "+00:00")), usegmt=True)


def resource_response(base: str, stored: Stored, status: int, located: bool | None = None) -> Response:
    """Location goes with a write (201, or a create that matched what exists: `located`), not with a read."""
    headers = {"ETag": stored.etag, "Last-Modified": http_date(stored.last_updated),
               "Location": f"{base}/{stored.type}/{stored.id}/_history/{stored.version}"}
    if not (located if located is not None else status == 201):
        headers.pop("Location")
    return Response(status, stored.resource, headers, stored)


class FhirApi:
    def __init__(self, store: Store, registry: Registry, base: str, export_dir: Path | None = None) -> None:
        """`export_dir`: where Bulk Data export files are kept (shared by the service's web processes)."""
        self.store, self.registry, self.base = store, registry, base
        self.export_dir = export_dir or Path("var") / "export" / registry.service
        self.repo = Repository(registry)

    # -- read side -------------------------------------------------------------------------
    def read(self, rtype: str, rid: str, items: list[tuple[str, str]] = ()) -> Response:
        """`items`: the query, whose `_summary` or `_elements` shape the answer."""
        rdef = self.registry.get(rtype)
        check_id(rid)
        shape = parse_query(rdef, [(k, v) for k, v in items if k in ("_summary", "_elements")], False)
        stored = self.store.read(rtype, rid)
        if stored is None or not visible(rdef, stored):
            raise FhirError.single(404, f"{rtype}/{rid} is not known", code="not-found")
        if stored.deleted:
            raise FhirError.single(410, f"{rtype}/{rid} was deleted", code="deleted")
        resp = resource_response(self.base, stored, 200)
        if shape.elements is not None:
            resp.body = with_elements(stored.resource, shape.elements)
        elif shape.summary not in (None, "false", "count"):
            resp.body = summarised(stored.resource, shape.summary)
        return resp

    def vread(self, rtype: str, rid: str, vid: str) -> Response:
        rdef = self.registry.get(rtype)
        check_id(rid)
        version = whole_number(vid)
        stored = self.store.vread(rtype, rid, version) if version is not None and 0 < version <= MAX_NUMBER else None
        if stored is None or not visible(rdef, stored):
            raise FhirError.single(404, f"{rtype}/{rid} has no version {vid}", code="not-found")
        if stored.deleted:
            raise FhirError.single(410, f"{rtype}/{rid} version {vid} is a deletion", code="deleted")
        return resource_response(self.base, stored, 200)

    def search(self, rtype: str, items: list[tuple[str, str]], strict: bool) -> Response:
        rdef = self.registry.get(rtype)
        q = parse_query(rdef, items, strict, self.registry)
        partner = rdef.confined_to("s")
        if partner is not None:  # a referral partner sees only its own submissions
            q.where.append(condition(TAG_PARAM, "", f"{PARTNER_TAG}|{partner}"))
        q.where.extend(patient_where(rdef, "search"))  # a patient app, only its own compartment
        cursor, counting = q.cursor, q.counting
        # One match more than the page tells whether another page follows in the direction it is read.
        page = self.store.search(rtype, q.where, cursor.sql_order() if cursor else q.order, q.count + 1,
                                 0 if cursor else q.offset, total=counting, seek=cursor.seek() if cursor else None)
        more, items = len(page.items) > q.count, page.items[:q.count]
        if cursor is not None and cursor.backwards:
            items.reverse()
        bounded = counting is not True and page.total is not None and page.total > counting
        page = Page(None if bounded else page.total, items)  # past the bound, no total rather than a wrong one
        included = Includer(self.store, self.registry).included(page.items, q.includes) if q.includes else []
        url = f"{self.base}/{rtype}"
        links = None if q.keyset is None else paging.cursor_links(url, q.used, q.count, cursor, q.keyset, items, more)
        bundle = bundles.searchset(self.base, url, q.used, page, q.count, q.offset, included, more, links)
        return Response(200, shape_entries(bundle, q.summary, q.elements))

    def history(self, rtype: str | None, rid: str | None, items: list[tuple[str, str]],
                strict: bool = False) -> Response:
        rdef = self.registry.get(rtype) if rtype else None
        if rid:
            check_id(rid)
            current = self.store.read(rtype, rid) if rtype else None
            if rtype and (current is None or not visible(rdef, current)):
                raise FhirError.single(404, f"{rtype}/{rid} is not known", code="not-found")
        elif caller_partner() is not None and (rdef is None or rdef.partner is not PartnerAccess.READ):
            raise refused("read the history of resources other than its own")  # it would list other partners'
        elif caller_patient() is not None and (rdef is None or patient_where(rdef, "read the history of")):
            raise FhirError.single(403, "a token bound to one patient may read the history of one resource only",
                                   code="forbidden")  # a type's history would list other patients' versions
        q = parse_history(items, strict)
        page = self.store.history(rtype, rid, q.since, q.count, q.offset)
        if rdef is not None and caller_patient() is not None:  # a version from before it was the patient's
            kept = [s for s in page.items if s.deleted or patient_sees(rdef, s.resource)]
            page = Page(None if page.total is None else page.total - (len(page.items) - len(kept)), kept)
        url = "/".join(p for p in (self.base, rtype, rid, "_history") if p)
        return Response(200, bundles.history(self.base, url, page, q.count, q.offset, q.used))

    def find(self, rtype: str, criteria: str) -> list[Stored]:
        """Resources matching a conditional query string such as `identifier=sys|val`."""
        rdef = self.registry.get(rtype)
        q = parse_query(rdef, parse_qsl(criteria, keep_blank_values=True), strict=True, registry=self.registry)
        if not q.where:
            raise FhirError.single(412, "a conditional request needs at least one search criterion",
                                   code="invalid")
        partner = rdef.confined_to("s")
        if partner is not None:
            q.where.append(condition(TAG_PARAM, "", f"{PARTNER_TAG}|{partner}"))
        q.where.extend(patient_where(rdef, "search"))
        return self.store.search(rtype, q.where, q.order, 2, 0, total=False).items

    # -- write side ------------------------------------------------------------------------
    def create(self, tx: Transaction, resource: dict, if_none_exist: str | None = None,
               validated: bool = False) -> Response:
        """`validated`: the caller already ran validate_resource on this very dict (validate once, at the edge)."""
        rtype = resource.get("resourceType", "")
        rdef = self.registry.get(rtype)
        if rdef.read_only:
            raise FhirError.single(405, f"{rtype} is read-only here", code="not-supported")
        if_none_exist = if_none_exist or rdef.natural_criteria(resource)
        if if_none_exist:
            tx.lock(criteria_lock(rtype, if_none_exist))  # two creates with one query: the second finds the first
            matches = self.find(rtype, if_none_exist)
            if len(matches) > 1:
                raise FhirError.single(412, "If-None-Exist matched more than one resource", code="duplicate")
            if matches:  # the client learns which resource it matched, even with Prefer: return=minimal
                return resource_response(self.base, matches[0], 200, located=True)
        stored = self.repo.create(tx, {k: v for k, v in resource.items() if k != "id"}, validated=validated)
        return resource_response(self.base, stored, 201)

    def update(self, tx: Transaction, rtype: str, rid: str, resource: dict, if_match: str | None,
               validated: bool = False) -> Response:
        if self.registry.get(rtype).read_only:
            raise FhirError.single(405, f"{rtype} is read-only here", code="not-supported")
        check_id(rid)
        if resource.get("id") is None:
            raise FhirError.single(400, "the resource in an update must carry its id", code="required",
                                   expression=f"{rtype}.id")
        existed = tx.read(rtype, rid)
        stored = self.repo.update(tx, rtype, rid, resource, parse_etag(if_match), validated=validated)
        return resource_response(self.base, stored, 200 if existed else 201)

    def conditional_update(self, tx: Transaction, rtype: str, criteria: str, resource: dict,
                           if_match: str | None) -> Response:
        """`PUT Type?criteria`: no match creates (with the body's id, if it names none that exists), one match
        is updated, several are 412."""
        if self.registry.get(rtype).read_only:
            raise FhirError.single(405, f"{rtype} is read-only here", code="not-supported")
        tx.lock(criteria_lock(rtype, criteria))
        matches = self.find(rtype, criteria)
        if len(matches) > 1:
            raise FhirError.single(412, "the conditional update's criteria match more than one resource",
                                   code="multiple-matches")
        rid = resource.get("id")
        if not matches:
            require(rtype, "c", "a conditional update that matches nothing")
            if rid is None:
                return self.create(tx, resource, validated=True)
            if tx.read(rtype, rid) is not None:
                raise FhirError.single(409, f"{rtype}/{rid} exists but does not meet the criteria", code="conflict")
            return self.update(tx, rtype, rid, resource, if_match, validated=True)
        if rid not in (None, matches[0].id):
            raise FhirError.single(400, f"the resource id is not that of the match ({matches[0].id})",
                                   code="invalid", expression=f"{rtype}.id")
        return self.update(tx, rtype, matches[0].id, {**resource, "id": matches[0].id}, if_match, validated=True)

    def conditional_delete(self, tx: Transaction, rtype: str, criteria: str) -> Response:
        """`DELETE Type?criteria` deletes the single match; several are 412, none is 204 (nothing to delete)."""
        if self.registry.get(rtype).read_only:
            raise FhirError.single(405, f"{rtype} is read-only here", code="not-supported")
        matches = self.find(rtype, criteria)
        if len(matches) > 1:
            raise FhirError.single(412, "the conditional delete's criteria match more than one resource; this "
                                        "server deletes a single match only", code="multiple-matches")
        return self.delete(tx, rtype, matches[0].id) if matches else Response(204)

    def patch(self, tx: Transaction, rtype: str, rid: str, document: Any, if_match: str | None) -> Response:
        """Apply a JSON Patch (a list) or a FHIRPath Patch (a Parameters) to the current version, then write the
        result as an update: the same validation, rules, hooks and If-Match."""
        rdef = self.registry.get(rtype)
        if rdef.read_only:
            raise FhirError.single(405, f"{rtype} is read-only here", code="not-supported")
        check_id(rid)
        expected = parse_etag(if_match)
        current = tx.read(rtype, rid)
        if current is None or not visible(rdef, current):
            raise FhirError.single(404, f"{rtype}/{rid} is not known", code="not-found")
        if current.deleted:
            raise FhirError.single(410, f"{rtype}/{rid} was deleted", code="deleted")
        new = patched(current.resource, document)
        stored = self.repo.update(tx, rtype, rid, new, expected, validated=True)
        return resource_response(self.base, stored, 200)

    def delete(self, tx: Transaction, rtype: str, rid: str) -> Response:
        if self.registry.get(rtype).read_only:
            raise FhirError.single(405, f"{rtype} is read-only here", code="not-supported")
        check_id(rid)
        self.repo.delete(tx, rtype, rid)
        return Response(204)


def criteria_lock(rtype: str, criteria: str) -> str:
    """The lock name of a conditional request's query, the same whatever the order of its parameters."""
    return f"criteria:{rtype}?" + "&".join(sorted(criteria.split("&")))


def shape_entries(bundle: dict[str, Any], summary: str | None, elements: frozenset[str] | None) -> dict[str, Any]:
    """A searchset's resources as `_summary` or `_elements` asks: the matches only, included ones whole."""
    if summary in (None, "false", "count") and elements is None:
        return bundle
    for entry in bundle.get("entry", []):
        if entry["search"]["mode"] == "match":
            resource = entry["resource"]
            entry["resource"] = with_elements(resource, elements) if elements is not None else \
                summarised(resource, summary or "false")
    return bundle


def not_found_operation(name: str) -> FhirError:
    return FhirError(404,
                     [Issue(f"operation ${name} is not supported here", code="not-supported")])
