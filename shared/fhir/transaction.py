"""Batch and transaction Bundles posted to the service base.

A transaction is all or nothing: one store transaction, `urn:uuid:` references between
entries resolved to the ids the server assigns, conditional creates (`ifNoneExist`) and
conditional references (`Patient?identifier=...`) resolved against what is stored.
A batch answers each entry on its own, each under a savepoint of the one store transaction.
"""
from __future__ import annotations

import copy
import uuid
from typing import Any
from urllib.parse import parse_qsl

from shared.fhir.interactions import FhirApi, Response
from shared.fhir.outcome import FhirError, Issue, operation_outcome
from shared.fhir.partners import created_together
from shared.fhir.store import Transaction
from shared.fhir.util import now_instant
from shared.fhir.validation import bundle_entry_errors, validate_bundle_entries

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


def _rewrite_refs(node: Any, mapping: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {k: _rewrite_refs(v, mapping) for k, v in node.items()}
        if isinstance(out.get("reference"), str) and out["reference"] in mapping:
            out["reference"] = mapping[out["reference"]]
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, mapping) for v in node]
    return node


def _references(node: Any, found: set[str]) -> set[str]:
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            found.add(node["reference"])
        for v in node.values():
            _references(v, found)
    elif isinstance(node, list):
        for v in node:
            _references(v, found)
    return found


def _is_conditional(ref: str) -> bool:
    """`Patient?identifier=...`: a search that must match exactly one resource, not a `Type/id`."""
    return "?" in ref and "/" not in ref.split("?")[0]


def processing_order(entries: list[dict]) -> list[int]:
    """FHIR's order by method (DELETE, POST, PUT, GET), and within it every entry after the entries it
    references, so that a write's business rules (a response's Patient must exist) see what it points at."""
    by_url = {e["fullUrl"]: i for i, e in enumerate(entries) if e.get("fullUrl")}
    needs = {i: {by_url[r] for r in _references(e.get("resource") or {}, set()) if by_url.get(r, i) != i}
             for i, e in enumerate(entries)}
    depth: dict[int, int] = {}

    def depth_of(i: int, path: frozenset[int]) -> int:
        if i not in depth:
            if i in path:
                return 0  # a reference cycle: the Bundle's own order decides
            depth[i] = 1 + max((depth_of(j, path | {i}) for j in needs[i]), default=-1)
        return depth[i]

    return sorted(range(len(entries)), key=lambda i: (
        ORDER.get(entries[i].get("request", {}).get("method"), 9), depth_of(i, frozenset()), i))


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
            for ref in filter(_is_conditional, _references(entry.get("resource") or {}, set())):
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
                entry["resource"] = _rewrite_refs(entry["resource"], mapping)
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
                if entry.get("request", {}).get("ifNoneExist") and entry["request"].get("method") == "POST":
                    found = self.api.find(entry["resource"]["resourceType"], entry["request"]["ifNoneExist"])
                    if found:
                        return {"response": _entry_response(Response(200, stored=found[0]))}
                resp = self.execute(tx, entry)
                return {"response": _entry_response(resp), **({"resource": resp.body} if resp.body else {})}
        except FhirError as exc:
            return _refusal(exc)

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
        if method == "DELETE" and len(parts) == 2:
            return self.api.delete(tx, parts[0], parts[1])
        if method == "GET" and len(parts) == 2:
            return self.api.read(*parts)
        if method == "GET" and len(parts) == 1:
            query = req.get("url", "").partition("?")[2]
            return self.api.search(parts[0], parse_qsl(query), strict=False)
        raise FhirError.single(400, f"unsupported request {method} {url}", code="not-supported")
