"""Hypothesis strategies for what a careless or hostile client sends: odd values, mutated resources, queries.

Everything starts from something valid (the suite's own examples of each type, a partner's intake
transaction) and breaks it a little: a value of the wrong JSON type, a missing or unknown element, a
broken reference, a date at the calendar's edge, a number past 64 bits, a string no parser expects.
"""
from __future__ import annotations

import copy
import json
from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import strategies as st

ODD_STRINGS = [
    "", " ", "²", "①", "٣", "\x00", "\ud800", "\u202e", "\U0001f600", "a" * 3000, "../..", ".", "..", "%00", "%", "%zz",
    "?", "#", "/", "Patient/", "Patient/../x", "Patient/²", "urn:uuid:", "urn:uuid:0", "#x", "http://[::1", "http://",
    "999999999999999999999", "-1", "1e309", "NaN", 'W/"²"', "<x/>", "' OR 1=1 --", "\\", "\t\n", "null", "[]", "{}",
    "$everything", "_history", "*", "|", "a|b|c", ",", "ge", "eq", "sa2024",
]
EDGE_DATES = [
    "9999-12-31T23:59:59+14:00", "0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00-14:00", "9999-12-31T23:59:59-14:00",
    "9999-12-31", "0001-01-01", "2024", "2024-02", "2024-02-30", "2024-13", "0000", "2024-01-01T25:00:00Z",
    "2024-01-01T10:00:00", "2024-01-01T10:00:00.123456789Z", "1900-01-01T00:00:00+99:00", "2024-01-01T10:00Z",
    "99999-01-01", "2024-01-01T10:00:00+14:01",
]
ODD_NUMBERS = [0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**30, -(10**30), 1.5, 1e308, -0.0]
ELEMENT_NAMES = ["reference", "system", "code", "value", "url", "extension", "resourceType", "id", "meta", "start",
                 "end", "coding", "text", "status", "subject", "display", "valueString", "_status", "contained"]
RESOURCE_TYPES = ["Patient", "CarePlan", "Goal", "Encounter", "Bundle", "Parameters", "OperationOutcome", "Foo", ""]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(ODD_NUMBERS),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
    st.sampled_from(ODD_STRINGS), st.sampled_from(EDGE_DATES),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(ELEMENT_NAMES) | st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
odd_references = st.sampled_from([
    "Patient/", "Patient/does-not-exist", "Patient/../../x", "Patient/²", "urn:uuid:not-in-this-bundle",
    "urn:uuid:", "#", "#missing", "http://[::1", "http://other.example.org/fhir/Patient/1", "Foo/1", "Patient?",
    "Patient?identifier=", "Patient?identifier=x|y", "CarePlan/a/b/c", "a" * 2000, "",
]).map(lambda ref: {"reference": ref})


def paths(node: Any, limit: int = 300, depth: int = 12) -> list[tuple]:
    """Places in a JSON document (tuples of keys and indices from the root), breadth first: the first
    `limit` of them down to `depth`, so that a document already made huge or deep stays cheap to mutate."""
    found: list[tuple] = []
    queue: list[tuple[tuple, Any]] = [((), node)]
    while queue and len(found) < limit:
        path, value = queue.pop(0)
        found.append(path)
        if len(path) >= depth:
            continue
        if isinstance(value, dict):
            queue += [((*path, k), v) for k, v in value.items()]
        elif isinstance(value, list):
            queue += [((*path, i), v) for i, v in enumerate(value[:20])]
    return found


def _get(node: Any, path: tuple) -> Any:
    for step in path:
        node = node[step]
    return node


def _set(root: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    _get(root, path[:-1])[path[-1]] = value
    return root


def _drop(root: Any, path: tuple) -> Any:
    if not path:
        return {}
    parent = _get(root, path[:-1])
    del parent[path[-1]]
    return root


def nested(depth: int) -> Any:
    node: Any = {"valueString": "x"}
    for _ in range(depth):
        node = {"extension": [{"url": "http://example.org/x", "extension": [node]}]}
    return node


MUTATIONS = ["replace", "odd", "drop", "drop", "null", "listify", "unlistify", "unknown", "reference", "date",
             "number", "deep", "duplicate", "type"]


@st.composite
def mutated(draw: st.DrawFn, document: Any) -> Any:
    """`document` with one to three elements broken in one of the ways clients break them."""
    root = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths(root)))
        kind = draw(st.sampled_from(MUTATIONS))
        current = _get(root, path)
        if kind == "replace":
            root = _set(root, path, draw(json_values))
        elif kind == "odd":
            root = _set(root, path, draw(st.sampled_from(ODD_STRINGS)))
        elif kind == "drop":
            root = _drop(root, path)
        elif kind == "null":
            root = _set(root, path, None)
        elif kind == "listify":
            root = _set(root, path, [current])
        elif kind == "unlistify":
            root = _set(root, path, current[0] if isinstance(current, list) and current else {})
        elif kind == "unknown" and isinstance(current, dict):
            current[draw(st.sampled_from(["unknownElement", "_unknown", "valueFoo", "modifierExtension", ""]))] = \
                draw(json_values)
        elif kind == "reference":
            root = _set(root, path, draw(odd_references))
        elif kind == "date":
            root = _set(root, path, draw(st.sampled_from(EDGE_DATES)))
        elif kind == "number":
            root = _set(root, path, draw(st.sampled_from(ODD_NUMBERS)))
        elif kind == "deep":
            root = _set(root, path, nested(draw(st.sampled_from([10, 70, 200]))))
        elif kind == "duplicate" and isinstance(current, list) and current and len(encode(current[0])) < 2000:
            current.extend(copy.deepcopy(current[0]) for _ in range(draw(st.integers(1, 60))))
        elif kind == "type" and isinstance(current, dict):
            current["resourceType"] = draw(st.sampled_from(RESOURCE_TYPES))
    return root


def raw(text: str) -> bytes:
    """A string as bytes on the wire: a lone surrogate becomes the invalid UTF-8 a careless client sends."""
    return text.encode("utf-8", "surrogatepass")


def form(items: list[tuple[str, str]]) -> bytes:
    """`application/x-www-form-urlencoded`, of names and values that need not be valid Unicode."""
    return urlencode([(raw(k), raw(v)) for k, v in items]).encode()


def encode(document: Any) -> bytes:
    """JSON as a client's library writes it (a lone surrogate escaped, as json.dumps does)."""
    return json.dumps(document).encode()


def path_segment(text: str) -> str:
    """A path segment percent-encoded from its bytes, so that any string can be one."""
    return quote(raw(text), safe="$_.-~")


RAW_BODIES = [
    b"", b"{", b"}", b"null", b"[]", b"1", b'"x"', b"true", b"\xef\xbb\xbf{}", b"\xff\xfe\x00", b'{"resourceType":',
    b'{"resourceType":"Patient","x":NaN}', b'{"resourceType":"Patient","birthDate":1e99999}',
    b'{"resourceType":"Patient","resourceType":"CarePlan"}', b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" +
    b"}" * 3000, b'{"resourceType":"Patient","id":"\\ud800"}', b"\x00" * 64, b"resourceType=Patient",
]
raw_bodies = st.one_of(st.sampled_from(RAW_BODIES), st.binary(max_size=40))

IDS = ["x", "3f2c0e9a-1d4b-4c55-9a8e-0d7b1c2e3f40", "a" * 64, "a" * 65, "²", "$x", "_history", "_search", "-", "A.B",
       "%2F", "123", "a b", "..a", "x" * 300, "0", "abc-123", "_", "$", "$graduate", "$status", "metadata"]
ids = st.sampled_from(IDS) | st.from_regex(r"\A[A-Za-z0-9\-.]{1,70}\Z")
versions = st.sampled_from(["1", "2", "0", "-1", "²", "①", "999999999999999999999", "1.5", "", "x", "01", " 1"])

MODIFIERS = ["", "", "", "", ":missing", ":exact", ":contains", ":not", ":text", ":above", ":below", ":identifier",
             ":Patient", ":bogus", ":", ":iterate", ":of-type", ":in"]
CONTROL_PARAMS = ["_count", "_offset", "_cursor", "_sort", "_total", "_summary", "_elements", "_include", "_revinclude",
                  "_format", "_pretty", "_since", "_at", "_list", "_type", "_has:Goal:patient:status", "_id",
                  "_lastUpdated", "_tag", "_security", "_profile", "_text", "_content", "_filter", "_query",
                  "bogus", "", "patient.name", "subject:Patient.identifier"]
PARAM_VALUES = [
    # cursors: of creation order at 1, of _lastUpdated with a bad instant, past a 64-bit key, and not base64
    "WyJjcmVhdGVkIiwibiIsMV0", "WyJ1cGRhdGVkIiwicCIsIngiLDFd", "WyJjcmVhdGVkIiwibiIsOTk5OTk5OTk5OTk5OTk5OTk5OTk5XQ",
    "WyJ1cGRhdGVkIiwibiIsIjIwMjYtMDEtMDFUMDA6MDA6MDAuMDAwWiIsLTFd", "!!!",
    "Patient/p1", "p1", "active", "draft", "http://loinc.org|44261-6", "|x", "x|", "|", "ge2024-01-01", "lt2025",
    "eq2024-03-04T10:00:00Z", "gt9999-12-31T23:59:59+14:00", "le0001-01-01T00:00:00+14:00", "ap2024", "ne2024-01",
    "_lastUpdated", "-_lastUpdated", "date", "-date", "status", "10", "0", "1000", "1001", "-5", "true", "false",
    "count", "accurate", "none", "estimate", "*", "CarePlan:goal", "Goal:patient", "json", "xml", "text/html",
    "a,b,,c", "Patient/x,Patient/y", "ge", "2024-01-01T00:00:00", "1111111111111111111111111111", "①", "²",
]
param_values = st.one_of(st.sampled_from(PARAM_VALUES), st.sampled_from(ODD_STRINGS), st.sampled_from(EDGE_DATES),
                         st.text(max_size=10))


@st.composite
def queries(draw: st.DrawFn, names: list[str]) -> list[tuple[str, str]]:
    """Zero to four search or history parameters: the type's own, control ones and unknown ones."""
    items = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(names + CONTROL_PARAMS))
        items.append((name + draw(st.sampled_from(MODIFIERS)), draw(param_values)))
    return items


ACCEPTS = [None, None, None, "application/fhir+json", "application/json", "*/*", "application/fhir+xml", "text/html",
           "", "application/fhir+json; fhirVersion=4.0", "application/fhir+json;q=0", "garbage", "application/*",
           "application/fhir+json, text/html;q=0.1", "application/json+fhir", "text/*;q=0.5"]
CONTENT_TYPES = [None, None, "application/fhir+json", "application/fhir+json", "application/json",
                 "application/fhir+json; charset=utf-8", "text/plain", "", "application/x-www-form-urlencoded",
                 "application/fhir+xml", "multipart/form-data; boundary=x", "application/fhir+json; charset=latin-1",
                 "garbage"]
PREFERS = [None, None, None, "return=minimal", "return=representation", "return=OperationOutcome",
           "handling=strict", "handling=lenient", "respond-async", "return=", "garbage;;;=", "return=minimal, x"]
IF_MATCHES = [None, 'W/"1"', 'W/"2"', 'W/"²"', '"1"', "*", "", "W/", 'W/"99999999999999999999999"', 'W/"-1"', "①"]
IF_NONE_EXISTS = [None, "identifier=x|y", "identifier=", "", "_id=x", "bogus=1", "status=active&patient=Patient/x",
                  "&&", "=", "%zz", "_count=①", "date=ge9999-12-31T23:59:59+14:00"]
OTHER_HEADERS = [{}, {}, {"X-Request-Id": "../../etc"}, {"Idempotency-Key": "²"}, {"Idempotency-Key": ""},
                 {"If-None-Match": "W/\"1\""}, {"If-Modified-Since": "yesterday"}, {"Content-Encoding": "gzip"},
                 {"Transfer-Encoding": "chunked"}, {"X-Forwarded-For": "::1"}, {"Cookie": "a=b"},
                 {"Accept-Charset": "latin-1"}, {"Range": "bytes=0-1"}, {"Expect": "100-continue"}]


@st.composite
def headers(draw: st.DrawFn, body: bool) -> dict[str, str]:
    out: dict[str, str] = dict(draw(st.sampled_from(OTHER_HEADERS)))
    for name, options in (("Accept", ACCEPTS), ("Prefer", PREFERS)):
        value = draw(st.sampled_from(options))
        if value is not None:
            out[name] = value
    if body:
        content_type = draw(st.sampled_from(CONTENT_TYPES))
        out["Content-Type"] = "application/fhir+json" if content_type is None else content_type
    return out
