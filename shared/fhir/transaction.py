"""Batch and transaction Bundles posted to the service base.

A transaction is all or nothing: one store transaction, `urn:uuid:` references between
entries resolved to the ids the server assigns, conditional creates (`ifNoneExist`) and
conditional references (`Patient?identifier=...`) resolved against what is stored.
A batch answers each entry on its own, each under a savepoint of the one store transaction.
"""
from __future__ import annotations

import base64
import binascii
import copy
import uuid
from typing import Any
from urllib.parse import parse_qsl

from shared.fhir.bundle_rules import duplicate_full_urls
from shared.fhir.interactions import FhirApi, Response
from shared.fhir.outcome import FhirError, Issue, operation_outcome
from shared.fhir.partners import created_together
from shared.fhir.patch import JSON_PATCH
from shared.fhir.references import PLACEHOLDER, is_conditional, placeholders, processing_order, references, rewrite
from shared.fhir.store import Stored, Transaction
from shared.fhir.util import now_instant
from shared.fhir.validation import bundle_entry_errors, parse_json, validate_bundle_entries


def _entry_response(resp: Response) -> dict[str, Any]:
    status = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}.get(resp.status, str(resp.status))
    out: dict[str, Any] = {"status": status}
    if resp.stored is not None:
        out["location"] = f"{resp.stored.type}/{resp.stored.id}/_history/{resp.stored.version}"
        out["etag"] = resp.stored.etag
        out["lastModified"] = resp.stored.last_updated
    return out


def _refusal(error: FhirError) -> dict[str, Any]:
    return {"response": {"status": str(error.status), "outcome": operation_outcome(error.issues)}}


def _without_entries(bundle: dict[str, Any], drop: set[int]) -> dict[str, Any]:
    kept = [e for i, e in enumerate(bundle.get("entry", [])) if i not in drop]
    shell = {k: v for k, v in bundle.items() if k != "entry"}
    return {**shell, "entry": kept} if kept else shell


class BundleProcessor:
    def __init__(self, api: FhirApi) -> None:
        self.api = api

    def check(self, bundle: dict[str, Any]) -> dict[int, FhirError]:
        """Validate a Bundle before any store transaction is open (it needs none, and holds no lock).

        Raises FhirError for a Bundle refused whole; returns the entries a batch refuses on their own.
        """
        kind = bundle.get("type")
        if kind not in ("transaction", "batch"):
            raise FhirError.single(422, "the service base accepts Bundles of type transaction or batch",
                                   code="invalid", expression="Bundle.type")
        duplicate_full_urls(bundle)
        if kind == "transaction":
            validate_bundle_entries(bundle)
            return {}
        # A batch answers each entry on its own: an invalid entry fails alone, the Bundle around it must not.
        refused = bundle_entry_errors(bundle)
        validate_bundle_entries(_without_entries(bundle, set(refused)))
        return refused

    def process(self, tx: Transaction, bundle: dict[str, Any],
                refused: dict[int, FhirError] | None = None) -> dict[str, Any]:
        """Execute a Bundle; `refused` is what `check` returned for it (checked here when not given)."""
        if refused is None:
            refused = self.check(bundle)
        kind, entries = bundle["type"], bundle.get("entry", [])
        if kind == "transaction":
            results = self.transaction(tx, entries)
        else:
            results = [_refusal(refused[i]) if i in refused else self.batch_entry(tx, e, i)
                       for i, e in enumerate(entries)]
        response = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": f"{kind}-response",
                    "timestamp": now_instant()}
        return {**response, "entry": results} if results else response

    def _assign_ids(self, entries: list[dict]) -> tuple[dict[str, str], dict[int, Response]]:
        """Map each POST entry's fullUrl to its new (or conditionally matched) Type/id."""
        mapping: dict[str, str] = {}
        matched: dict[int, Response] = {}
        for i, entry in enumerate(entries):
            req, res = entry.get("request", {}), entry.get("resource") or {}
            target = _put_target(entry)
            if target and entry.get("fullUrl"):
                mapping[entry["fullUrl"]] = target
            if req.get("method") != "POST":
                continue
            rtype = res.get("resourceType", "")
            new_id = str(uuid.uuid4())
            criteria = req.get("ifNoneExist") or self.api.registry.get(rtype).natural_criteria(res)
            if criteria:
                found = self.api.find(rtype, criteria)
                if len(found) > 1:
                    raise FhirError.single(412, f"entry {i}: ifNoneExist matched more than one resource",
                                           code="duplicate", expression=f"Bundle.entry[{i}].request.ifNoneExist")
                if found:
                    new_id = found[0].id
                    matched[i] = Response(200, found[0].resource, stored=found[0])
            if entry.get("fullUrl"):
                mapping[entry["fullUrl"]] = f"{rtype}/{new_id}"
            entry["_id"] = new_id
        return mapping, matched

    def _resolve_conditionals(self, entries: list[dict], mapping: dict[str, str]) -> None:
        for entry in entries:
            for ref in {r for _, r in references(entry.get("resource") or {}) if is_conditional(r)}:
                rtype, criteria = ref.split("?", 1)
                found = self.api.find(rtype, criteria)
                if len(found) != 1:
                    raise FhirError.single(412, f"conditional reference {rtype}?... matched {len(found)} "
                                                f"resources, not one", code="not-found")
                mapping[ref] = f"{rtype}/{found[0].id}"

    def transaction(self, tx: Transaction, entries: list[dict]) -> list[dict]:
        entries = copy.deepcopy(entries)
        mapping, matched = self._assign_ids(entries)
        self._resolve_conditionals(entries, mapping)
        with created_together(mapping.values()):
            return self._execute_all(tx, entries, mapping, matched)

    def _execute_all(self, tx: Transaction, entries: list[dict], mapping: dict[str, str],
                     matched: dict[int, Response]) -> list[dict]:
        results: dict[int, dict] = {}
        for i in processing_order(entries):
            entry = entries[i]
            if i in matched:
                results[i] = {"response": _entry_response(matched[i])}
                continue
            if entry.get("resource") is not None:
                entry["resource"] = rewrite(entry["resource"], mapping)
                unresolved_placeholders(entry["resource"], f"Bundle.entry[{i}].resource")
            try:
                resp = self.execute(tx, entry)
            except FhirError as exc:
                exc.issues = [Issue(f"entry {i}: {iss.diagnostics}", iss.code, iss.severity,
                                    iss.expression or f"Bundle.entry[{i}]") for iss in exc.issues]
                raise
            results[i] = {"response": _entry_response(resp)}
            if resp.body is not None and resp.status in (200, 201):
                results[i]["resource"] = resp.body
        return [results[i] for i in range(len(entries))]

    def batch_entry(self, tx: Transaction, entry: dict, i: int) -> dict:
        """One entry of a batch, under a savepoint: a refused entry leaves nothing of itself behind."""
        try:
            with tx.savepoint():
                entry = dict(entry, _id=str(uuid.uuid4()))
                found = self._match(entry)
                if found is not None:
                    return {"response": _entry_response(Response(200, stored=found))}
                if entry.get("resource") is not None:  # a batch resolves no reference between its entries
                    unresolved_placeholders(entry["resource"], f"Bundle.entry[{i}].resource")
                resp = self.execute(tx, entry)
                return {"response": _entry_response(resp), **({"resource": resp.body} if resp.body else {})}
        except FhirError as exc:
            return _refusal(exc)

    def _match(self, entry: dict) -> Stored | None:
        """What a batch POST entry's ifNoneExist, or its resource's natural key, finds already stored."""
        req, resource = entry.get("request") or {}, entry.get("resource") or {}
        if req.get("method") != "POST" or not resource:
            return None
        rtype = resource.get("resourceType", "")
        criteria = req.get("ifNoneExist") or self.api.registry.get(rtype).natural_criteria(resource)
        found = self.api.find(rtype, criteria) if criteria else []
        if len(found) > 1:
            raise FhirError.single(412, "ifNoneExist matched more than one resource", code="duplicate",
                                   expression="Bundle.entry.request.ifNoneExist")
        return found[0] if found else None

    def execute(self, tx: Transaction, entry: dict) -> Response:
        req = entry.get("request") or {}
        method, url = req.get("method"), (req.get("url") or "").split("?")[0].strip("/")
        parts = url.split("/")
        if method == "POST":
            rtype = entry["resource"].get("resourceType", "")
            if parts != [rtype]:
                raise FhirError.single(400, f"a POST entry's request.url must be its resource type ({rtype})",
                                       code="invalid")
            if self.api.registry.get(rtype).read_only:
                raise FhirError.single(405, f"{rtype} is read-only here", code="not-supported")
            # Every entry that gets here passed validate_bundle_entries: validate once, at the edge.
            stored = self.api.repo.create(tx, entry["resource"], rid=entry.get("_id"), validated=True)
            return Response(201, stored.resource, stored=stored)
        if method == "PUT" and len(parts) == 2:
            if entry["resource"].get("resourceType") != parts[0]:
                raise FhirError.single(422, f"a PUT entry to {parts[0]} must carry a {parts[0]}", code="invalid",
                                       expression="resourceType")
            return self.api.update(tx, parts[0], parts[1], entry["resource"], req.get("ifMatch"), validated=True)
        query = (req.get("url") or "").partition("?")[2]
        if method == "PUT" and len(parts) == 1 and query:
            if entry["resource"].get("resourceType") != parts[0]:
                raise FhirError.single(422, f"a PUT entry to {parts[0]} must carry a {parts[0]}", code="invalid",
                                       expression="resourceType")
            return self.api.conditional_update(tx, parts[0], query, entry["resource"], req.get("ifMatch"))
        if method == "DELETE" and len(parts) == 1 and query:
            return self.api.conditional_delete(tx, parts[0], query)
        if method == "PATCH" and len(parts) == 2:
            return self.api.patch(tx, parts[0], parts[1], entry_patch(entry), req.get("ifMatch"))
        if method == "DELETE" and len(parts) == 2:
            return self.api.delete(tx, parts[0], parts[1])
        if method == "GET" and len(parts) == 2:
            return self.api.read(*parts)
        if method == "GET" and len(parts) == 1:
            query = req.get("url", "").partition("?")[2]
            return self.api.search(parts[0], parse_qsl(query), strict=False)
        raise FhirError.single(400, f"unsupported request {method} {url}", code="not-supported")


def entry_patch(entry: dict) -> Any:
    """A PATCH entry's patch: a FHIRPath Patch (Parameters), or a JSON Patch carried in a Binary as FHIR
    requires (contentType application/json-patch+json, the patch base64 in data)."""
    resource = entry.get("resource") or {}
    if resource.get("resourceType") == "Parameters":
        return resource
    if resource.get("resourceType") == "Binary" and resource.get("contentType") == JSON_PATCH:
        try:
            return parse_json(base64.b64decode(resource.get("data", ""), validate=True), array=True)
        except (binascii.Error, ValueError):
            raise FhirError.single(400, "the Binary's data is not base64", code="invalid",
                                   expression="Binary.data") from None
    raise FhirError.single(400, f"a PATCH entry carries a Parameters (FHIRPath Patch) or a Binary of {JSON_PATCH}",
                           code="invalid", expression="Bundle.entry.resource")


def _put_target(entry: dict) -> str | None:
    """`Type/id` of a PUT entry, which other entries may reference by its fullUrl."""
    req = entry.get("request") or {}
    parts = (req.get("url") or "").split("?")[0].strip("/").split("/")
    return "/".join(parts) if req.get("method") == "PUT" and len(parts) == 2 else None


def unresolved_placeholders(resource: dict, root: str) -> None:
    """Refuse a resource that would be stored with a `urn:uuid:` reference: it names no entry of its Bundle
    (or, outside a Bundle, no entry at all), and no reader could ever resolve it."""
    found = placeholders(resource)
    if found:
        raise FhirError(422, [Issue(f"{root}.{path}: {PLACEHOLDER} references must name the fullUrl of an entry "
                                    f"in the same transaction", code="invalid", expression=f"{root}.{path}")
                              for path, _ in found])
