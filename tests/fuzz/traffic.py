"""Strategies for whole requests to one service, built from what its registry says it serves.

Each family of the REST API (create, update, instance interactions, search, history, operations,
batch and transaction Bundles, and requests no client should send) is one strategy producing a `Sent`.
"""
from __future__ import annotations

import copy
import importlib
import uuid
from functools import cache
from typing import Any

from hypothesis import strategies as st

from services.intake.samples import partner_submission
from shared.config import Settings
from shared.fhir.registry import Registry
from tests.fuzz.contract import Sent
from tests.fuzz.values import (
    EDGE_DATES,
    ODD_STRINGS,
    encode,
    form,
    headers,
    ids,
    json_values,
    mutated,
    path_segment,
    queries,
    raw_bodies,
    versions,
)
from tests.support import examples

SERVICES = ("intake", "careplan", "encounters", "aftercare")
PATIENT = "fuzz-patient"  # a Patient the intake service knows (the targets fixture creates it)
NOT_SERVED = ["Foo", "Bundle", "Parameters", "OperationOutcome", "patient", "", "Patient2", "CapabilityStatement"]
OPERATION_PARAMETERS: dict[str, dict[str, Any]] = {
    "graduate": {"resourceType": "Parameters", "parameter": [{"name": "override-reason",
                                                               "valueString": "clinician's decision"}]},
    "record-group-attendance": {"resourceType": "Parameters", "parameter": [
        {"name": "group", "valueString": "relapse-prevention-1"},
        {"name": "start", "valueDateTime": "2026-03-02T15:00:00Z"},
        {"name": "end", "valueDateTime": "2026-03-02T17:00:00Z"},
        {"name": "attendee", "part": [{"name": "patient", "valueReference": {"reference": f"Patient/{PATIENT}"}},
                                      {"name": "attendance", "valueCode": "attended"}]}]},
    "resend": {"resourceType": "Parameters", "parameter": [{"name": "eventsSinceNumber", "valueInteger": 1}]},
    "events": {"resourceType": "Parameters", "parameter": [{"name": "eventsSinceNumber", "valueInteger": 1},
                                                            {"name": "eventsUntilNumber", "valueInteger": 3}]},
    "sweep-checkins": {"resourceType": "Parameters", "parameter": [{"name": "date", "valueDate": "2026-03-01"}]},
    "status": {"resourceType": "Parameters", "parameter": [{"name": "id", "valueString": "x"}]},
    "topic-list": {"resourceType": "Parameters", "parameter": []},
}
OPERATION_QUERIES = ["eventsSinceNumber", "eventsUntilNumber", "content", "id", "mode", "profile", "date", "_count",
                     "_since", "_type", "_offset", "_typeFilter", "_outputFormat"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]


@cache
def registry_of(service: str) -> Registry:
    module = importlib.import_module(f"services.{service}.resources")
    return module.build_registry(Settings(service, database=":memory:"))


def types_of(service: str) -> list[str]:
    return list(registry_of(service).types)


def param_names(service: str, rtype: str) -> list[str]:
    """The type's parameters, and chains and `_has` keys built from what the service serves."""
    registry = registry_of(service)
    rdef = registry.types.get(rtype)
    if rdef is None:
        return ["patient", "status"]
    names = [p.name for p in rdef.all_params]
    references = [p.name for p in rdef.all_params if p.kind == "reference"]
    for other, odef in sorted(registry.types.items()):
        first = next((p.name for p in odef.params), "_id")
        names += [f"{ref}:{other}.{first}" for ref in references[:2]]
        names += [f"_has:{other}:{p.name}:{first}" for p in odef.all_params if p.kind == "reference"][:1]
    return names


def include_values(service: str) -> list[str]:
    registry = registry_of(service)
    return [f"{t}:{p.name}" for t, rdef in registry.types.items() for p in rdef.all_params if p.kind == "reference"]


def seed(rtype: str) -> dict[str, Any]:
    """A valid resource of a served type, or a stranger's resource for a type the service does not serve."""
    if rtype in examples.EXAMPLES:
        return examples.minimal(rtype, PATIENT)
    return {"resourceType": rtype, "id": "x"}


def bodies(document: Any) -> st.SearchStrategy[bytes]:
    """The document as sent, broken a little, or not JSON at all."""
    return st.one_of(st.just(encode(document)), mutated(document).map(encode), mutated(document).map(encode),
                     raw_bodies)


@st.composite
def creates(draw: st.DrawFn, service: str) -> Sent:
    rtype = draw(st.sampled_from(types_of(service) * 3 + NOT_SERVED))
    hdrs = draw(headers(body=True))
    if draw(st.booleans()):
        hdrs["If-None-Exist"] = draw(st.sampled_from(["identifier=x|y", "identifier=", "", "_id=x", "bogus=1", "&&",
                                                      "status=active&patient=Patient/x", "%zz", "_count=①",
                                                      "date=ge9999-12-31T23:59:59+14:00", "_lastUpdated=gt0001"]))
    if draw(st.integers(0, 9)) == 0:
        hdrs["Idempotency-Key"] = draw(st.sampled_from(["k1", "²", "a" * 500, str(uuid.uuid4())]))
    return Sent(service, "POST", f"/fhir/{rtype}", headers=hdrs, body=draw(bodies(seed(rtype))), family="create")


@st.composite
def updates(draw: st.DrawFn, service: str) -> Sent:
    rtype = draw(st.sampled_from(types_of(service) * 3 + NOT_SERVED))
    rid = draw(ids)
    document = {**seed(rtype), "id": draw(st.sampled_from([rid, rid, "other", "", None]))}
    hdrs = draw(headers(body=True))
    if draw(st.booleans()):
        hdrs["If-Match"] = draw(st.sampled_from(['W/"1"', 'W/"2"', 'W/"²"', '"1"', "*", "", "W/", 'W/"-1"',
                                                 'W/"99999999999999999999999"', "①"]))
    return Sent(service, "PUT", f"/fhir/{rtype}/{rid}", headers=hdrs, body=draw(bodies(document)), family="update")


@st.composite
def instance_requests(draw: st.DrawFn, service: str) -> Sent:
    rtype = draw(st.sampled_from(types_of(service) * 2 + NOT_SERVED))
    rid = draw(ids)
    suffix = draw(st.sampled_from(["", "", "/_history", f"/_history/{draw(versions)}", "/$everything", "/x",
                                   "/_history/1/x", "/$validate"]))
    method = draw(st.sampled_from(["GET", "GET", "DELETE", "HEAD", "OPTIONS", "PATCH", "POST"]))
    body = draw(st.one_of(st.none(), raw_bodies)) if method in ("POST", "PATCH") else None
    hdrs = draw(headers(body=body is not None))
    return Sent(service, method, f"/fhir/{rtype}/{rid}{suffix}", headers=hdrs, body=body, family="instance")


@st.composite
def searches(draw: st.DrawFn, service: str) -> Sent:
    rtype = draw(st.sampled_from(types_of(service) * 3 + NOT_SERVED))
    query = draw(queries(param_names(service, rtype)))
    if draw(st.booleans()):
        hdrs = draw(headers(body=False))
        return Sent(service, "GET", f"/fhir/{rtype}", params=query, headers=hdrs, family="search")
    hdrs = draw(headers(body=True))
    hdrs["Content-Type"] = draw(st.sampled_from(["application/x-www-form-urlencoded"] * 3 + [hdrs["Content-Type"]]))
    return Sent(service, "POST", f"/fhir/{rtype}/_search", headers=hdrs, body=form(query),
                family="search")


@st.composite
def includes(draw: st.DrawFn, service: str) -> Sent:
    """Searches with _include/_revinclude (:iterate), _summary, _elements and _total."""
    rtype = draw(st.sampled_from(types_of(service)))
    query = draw(queries(param_names(service, rtype)))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(["_include", "_revinclude", "_include:iterate", "_revinclude:iterate",
                                    "_summary", "_elements", "_total", "_include:bogus"]))
        value = draw(st.sampled_from([*include_values(service), "*", "x:y:z", "true", "count", "text", "data",
                                      "none", "accurate", "status,subject", "id", "", "Patient:link"]))
        query.append((key, value))
    return Sent(service, "GET", f"/fhir/{rtype}", params=query, headers=draw(headers(body=False)), family="include")


PATCH_MEDIA = ["application/json-patch+json", "application/fhir+json", "application/merge-patch+json",
               "application/json", "text/plain"]


@st.composite
def patches(draw: st.DrawFn, service: str) -> Sent:
    """PATCH with a JSON Patch, a FHIRPath Patch or a merge patch, broken or not, with or without If-Match."""
    rtype = draw(st.sampled_from(types_of(service) + NOT_SERVED[:2]))
    document: Any = draw(st.sampled_from([
        [{"op": "replace", "path": "/status", "value": "active"}], [{"op": "remove", "path": "/id"}],
        [{"op": "add", "path": "/meta/tag/-", "value": {"code": "x"}}], [{"op": "test", "path": "/x", "value": 1}],
        [{"op": "move", "from": "/subject", "path": "/patient"}], [{"op": "bogus"}], [],
        {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
            {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": f"{rtype}.status"},
            {"name": "value", "valueCode": "active"}]}]},
        {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
            {"name": "type", "valueCode": "delete"}, {"name": "path", "valueString": f"{rtype}.where("}]}]},
        {"status": "active"}, {"id": "other"}, {"subject": None}]))
    hdrs = draw(headers(body=True))
    hdrs["Content-Type"] = draw(st.sampled_from(PATCH_MEDIA))
    if draw(st.booleans()):
        hdrs["If-Match"] = draw(st.sampled_from(['W/"1"', 'W/"2"', '"x"', "①"]))
    body = draw(st.one_of(st.just(encode(document)), mutated(document).map(encode), raw_bodies))
    return Sent(service, "PATCH", f"/fhir/{rtype}/{draw(ids)}", headers=hdrs, body=body, family="patch")


@st.composite
def conditionals(draw: st.DrawFn, service: str) -> Sent:
    """Conditional update and delete: `PUT Type?criteria`, `DELETE Type?criteria`."""
    rtype = draw(st.sampled_from(types_of(service) + NOT_SERVED[:2]))
    query = draw(queries(param_names(service, rtype)))
    method = draw(st.sampled_from(["PUT", "DELETE"]))
    body = draw(bodies({**seed(rtype), "id": draw(st.sampled_from(["x", PATIENT, None]))})) if method == "PUT" \
        else None
    return Sent(service, method, f"/fhir/{rtype}", params=query, headers=draw(headers(body=body is not None)),
                body=body, family="conditional")


@st.composite
def exports(draw: st.DrawFn, service: str) -> Sent:
    """Bulk Data kick-offs, and status and file URLs that were never handed out."""
    path = draw(st.sampled_from(["/fhir/$export", "/fhir/Patient/$export", f"/fhir/Group/{draw(ids)}/$export",
                                 f"/fhir/_export/{draw(ids)}", f"/fhir/_export/{uuid.uuid4()}",
                                 f"/fhir/_export/{uuid.uuid4()}/1.ndjson", f"/fhir/_export/{draw(ids)}/{draw(ids)}"]))
    names = ["_type", "_since", "_typeFilter", "_outputFormat", "patient", "_elements", "includeAssociatedData"]
    query = [(draw(st.sampled_from(names)), draw(st.sampled_from([*types_of(service), "Foo", "", "ndjson",
                                                                  "Patient?bogus=1", "CarePlan?status=active",
                                                                  *EDGE_DATES[:4], *ODD_STRINGS[:10]])))
             for _ in range(draw(st.integers(0, 3)))]
    hdrs = draw(headers(body=False))
    if draw(st.booleans()):
        hdrs["Prefer"] = "respond-async"
    return Sent(service, draw(st.sampled_from(["GET", "GET", "DELETE", "POST"])), path, params=query, headers=hdrs,
                family="export")


@st.composite
def histories(draw: st.DrawFn, service: str) -> Sent:
    rtype = draw(st.sampled_from(types_of(service) + NOT_SERVED[:2]))
    path = draw(st.sampled_from(["/fhir/_history", f"/fhir/{rtype}/_history", f"/fhir/{rtype}/{draw(ids)}/_history"]))
    names = ["_since", "_at", "_list", "_offset", "_count", "_sort", "_type", "page", "_format"]
    query = draw(queries(names))
    if draw(st.booleans()):
        query.append((draw(st.sampled_from(names)), draw(st.sampled_from(["", *EDGE_DATES, *ODD_STRINGS[:20]]))))
    return Sent(service, "GET", path, params=query, headers=draw(headers(body=False)), family="history")


@st.composite
def parameters(draw: st.DrawFn, op: str, rtype: str) -> Any:
    if op == "validate":
        document: Any = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": seed(rtype)}]}
        if draw(st.booleans()):
            document = seed(rtype)
    else:
        document = copy.deepcopy(OPERATION_PARAMETERS.get(op, {"resourceType": "Parameters"}))
    if draw(st.booleans()):
        document.setdefault("parameter", []).append(
            {"name": draw(st.sampled_from(["x", "", "resource", *OPERATION_QUERIES])),
             draw(st.sampled_from(["valueString", "valueInteger", "valueDate", "valueDateTime", "valueBoolean",
                                   "valueReference", "valueCode", "resource", "part", "valueUnsignedInt"])):
                 draw(json_values)})
    return document


@st.composite
def operations(draw: st.DrawFn, service: str) -> Sent:
    registry = registry_of(service)
    known = [(op.type, op.instance, op.name) for op in registry.operations.values()]
    known += [(t, False, "validate") for t in registry.types]
    known += [(None, False, "everything"), ("Patient", True, "everything"), (None, False, "export"),
              ("Patient", False, "export"), ("Group", True, "export")]
    rtype, instance, name = draw(st.sampled_from(known))
    rtype = rtype or draw(st.sampled_from([None, *registry.types]))
    path = "/fhir" + (f"/{rtype}" if rtype else "") + (f"/{draw(ids)}" if instance else "") + f"/${name}"
    method = draw(st.sampled_from(["POST", "POST", "GET", "GET", "PUT", "DELETE"]))
    query = [(k, draw(st.sampled_from(["1", "0", "-1", "²", "①", "999999999999999999999", "", "x",
                                       "id-only", "full-resource", "2026-03-01", *EDGE_DATES[:4]])))
             for k in draw(st.lists(st.sampled_from(OPERATION_QUERIES), max_size=3))]
    body = None
    if method in ("POST", "PUT"):
        body = draw(st.one_of(parameters(op=name, rtype=rtype or "Patient").map(encode),
                              parameters(op=name, rtype=rtype or "Patient").flatmap(mutated).map(encode),
                              raw_bodies, st.none()))
    return Sent(service, method, path, params=query, headers=draw(headers(body=body is not None)), body=body,
                family="operation")


@st.composite
def entries(draw: st.DrawFn, service: str, full_urls: list[str]) -> Any:
    rtype = draw(st.sampled_from(types_of(service)))
    resource = seed(rtype)
    if full_urls and draw(st.booleans()):
        for key in ("subject", "patient", "for"):
            if key in resource:
                resource[key] = {"reference": draw(st.sampled_from(full_urls))}
    kind = draw(st.sampled_from(["POST", "POST", "PUT", "GET", "GET-search", "DELETE", "PATCH", "conditional",
                                 "odd"]))
    if kind == "POST":
        entry: Any = {"fullUrl": draw(st.sampled_from(full_urls)) if full_urls else f"urn:uuid:{uuid.uuid4()}",
                      "resource": resource, "request": {"method": "POST", "url": rtype}}
        if draw(st.integers(0, 3)) == 0:
            entry["request"]["ifNoneExist"] = draw(st.sampled_from(["identifier=x|y", "", "bogus=1", "_id=²"]))
    elif kind == "PUT":
        rid = draw(ids)
        entry = {"resource": {**resource, "id": rid}, "request": {"method": "PUT", "url": f"{rtype}/{rid}"}}
    elif kind == "GET":
        entry = {"request": {"method": "GET", "url": f"{rtype}/{draw(ids)}"}}
    elif kind == "GET-search":
        query = form(draw(queries(param_names(service, rtype)))).decode()
        entry = {"request": {"method": "GET", "url": f"{rtype}?{query}"}}
    elif kind == "DELETE":
        entry = {"request": {"method": "DELETE", "url": f"{rtype}/{draw(ids)}"}}
    elif kind == "PATCH":
        entry = {"resource": draw(st.sampled_from([
            {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
                {"name": "type", "valueCode": "delete"}, {"name": "path", "valueString": f"{rtype}.meta.tag"}]}]},
            {"resourceType": "Binary", "contentType": "application/json-patch+json",
             "data": "W3sib3AiOiJyZW1vdmUiLCJwYXRoIjoiL21ldGEvdGFnIn1d"},
            {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": "bm90IGpzb24="},
            resource])), "request": {"method": "PATCH", "url": f"{rtype}/{draw(ids)}"}}
    elif kind == "conditional":
        query = form(draw(queries(param_names(service, rtype)))).decode()
        method = draw(st.sampled_from(["PUT", "DELETE"]))
        entry = {"request": {"method": method, "url": f"{rtype}?{query}"}}
        if method == "PUT":
            entry["resource"] = resource
    else:
        entry = draw(st.sampled_from([1, None, "x", [], {}, {"request": "x"}, {"resource": resource},
                                      {"request": {"method": "PATCH", "url": rtype}, "resource": resource},
                                      {"request": {"method": "POST", "url": "Foo"}, "resource": resource}]))
    return entry


@st.composite
def bundles(draw: st.DrawFn, service: str) -> Sent:
    full_urls = [f"urn:uuid:{uuid.UUID(int=i)}" for i in range(draw(st.integers(0, 3)))]
    if service == "intake" and draw(st.booleans()):
        document: Any = partner_submission()
    else:
        document = {"resourceType": "Bundle", "type": draw(st.sampled_from(["transaction", "batch", "batch",
                                                                             "transaction", "collection", "x"])),
                    "entry": draw(st.lists(entries(service, full_urls), max_size=5))}
    if draw(st.integers(0, 4)) == 0:
        document["identifier"] = draw(st.sampled_from([{"system": "urn:x", "value": "1"}, "x", [], {"value": 1}]))
    body = draw(bodies(document))
    return Sent(service, "POST", draw(st.sampled_from(["/fhir", "/fhir/"])), headers=draw(headers(body=True)),
                body=body, family="bundle")


@st.composite
def strays(draw: st.DrawFn, service: str) -> Sent:
    """Requests no FHIR client sends: odd paths and methods, very long URLs, many or odd headers."""
    segments = draw(st.lists(st.sampled_from([*ODD_STRINGS[:40], "fhir", "Patient", "_history", "$validate",
                                              "metadata", "%2e%2e", "%2F"]), min_size=0, max_size=5))
    path = "/fhir/" + "/".join(path_segment(s) for s in segments)
    if draw(st.integers(0, 9)) == 0:
        path = "/fhir/Patient/" + "a" * draw(st.sampled_from([4000, 9000, 20000]))
    hdrs = draw(headers(body=False))
    if draw(st.integers(0, 9)) == 0:
        hdrs["X-Long"] = "h" * draw(st.sampled_from([5000, 9000, 20000]))
    if draw(st.integers(0, 9)) == 0:
        hdrs |= {f"X-Many-{i}": "v" for i in range(draw(st.sampled_from([50, 120])))}
    method = draw(st.sampled_from(METHODS + ["TRACE", "PROPFIND"]))
    return Sent(service, method, path, params=draw(queries(["patient", "status"])), headers=hdrs, family="stray")


AUTHORIZATIONS = ["default"] * 12 + [None, "", "Bearer", "Bearer ", "bearer {token}", "BEARER {token}",
                                     "Bearer  {token}", "Basic dXNlcjpwYXNz", "Bearer x.y.z", "Bearer " + "a" * 3000,
                                     "Bearer {token}x", "Token {token}", "Bearer {partner}", "Bearer {partner}",
                                     "Bearer {partner}", "Bearer {narrow}", "Bearer {narrow}", "Bearer {patient}",
                                     "Bearer {patient}", "Bearer {patient}"]
authorizations = st.sampled_from(AUTHORIZATIONS)

FAMILIES = {"create": creates, "update": updates, "instance": instance_requests, "search": searches,
            "include": includes, "patch": patches, "conditional": conditionals, "export": exports,
            "history": histories, "operation": operations, "bundle": bundles, "stray": strays}
