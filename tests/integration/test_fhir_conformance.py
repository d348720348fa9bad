"""FHIR R4 REST conformance of every (service, resource type) pair the suite serves.

Each test gets the service's real app on a fresh temporary store (no mocks) and talks to it with
Flask's test client, the way an EHR integration would over HTTP: create, conditional create, read,
vread, update with ETags, delete, history, search and paging, bad input, transactions and batches,
$validate and the CapabilityStatement. The pairs come from the services' own registries, so a type
added to a service is covered (and needs an example in tests/support/examples.py) without editing
this file.
"""
from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from shared.config import Settings
from shared.fhir import uscore
from shared.fhir.registry import Registry
from shared.fhir.util import now_instant
from shared.fhir.validation import validate_resource
from tests.support import examples
from tests.support.auth import TEST_SECRET, token
from tests.support.examples import SHAPES, minimal, status_of, with_date, with_status
from tests.support.postgres import store_locator
from tests.support.waiting import wait_until

SERVICES = ("intake", "careplan", "encounters", "aftercare")
FHIR_JSON = "application/fhir+json"
MAX_BODY = 64 * 1024
ALICE, BOB, CAROL = "alice-rivera", "bob-chen", "carol-diaz"
TAG = {"system": "https://iop-suite.org/fhir/CodeSystem/review", "code": "reviewed"}


def registry_of(service: str) -> Registry:
    module = importlib.import_module(f"services.{service}.resources")
    return module.build_registry(Settings(service, database=":memory:"))


@dataclass(frozen=True)
class Pair:
    service: str
    rtype: str

    def __str__(self) -> str:
        return f"{self.service}-{self.rtype}"


PAIRS = [Pair(s, t) for s in SERVICES for t, rdef in registry_of(s).types.items()]
WRITABLE = [p for p in PAIRS if not registry_of(p.service).types[p.rtype].read_only]
READ_ONLY = [p for p in PAIRS if p not in WRITABLE]


class Fhir:
    """One service's FHIR API through the Flask test client, speaking application/fhir+json."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.client: FlaskClient = app.test_client()
        self.client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token()}"
        self.base = app.extensions["iop"].settings.base_url

    def send(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             content_type: str = FHIR_JSON) -> TestResponse:
        data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        all_headers = {"Accept": FHIR_JSON, **({"Content-Type": content_type} if data is not None else {}),
                       **(headers or {})}
        return self.client.open(path, method=method, data=data, headers=all_headers)

    def get(self, path: str, **kw: Any) -> TestResponse:
        return self.send("GET", path, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> TestResponse:
        return self.send("POST", path, body, **kw)

    def put(self, path: str, body: Any, **kw: Any) -> TestResponse:
        return self.send("PUT", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> TestResponse:
        return self.send("DELETE", path, **kw)

    def follow(self, url: str) -> TestResponse:
        """GET an absolute link the server handed out (paging links, Location)."""
        assert url.startswith(self.base + "/"), url
        parts = urlsplit(url)
        return self.get(parts.path + (f"?{parts.query}" if parts.query else ""))

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        resp = self.post(f"/fhir/{resource['resourceType']}", resource)
        assert resp.status_code == 201, resp.get_data(as_text=True)
        return resp.json

    def create_apart(self, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Create each resource in a later millisecond than the one before, so _lastUpdated orders them."""
        created: list[dict[str, Any]] = []
        for resource in resources:
            if created:
                last = created[-1]["meta"]["lastUpdated"]
                wait_until(lambda last=last: now_instant() > last, 2, 0.001, "the next millisecond")
            created.append(self.create(resource))
        return created

    def search(self, rtype: str, query: str = "", **kw: Any) -> dict[str, Any]:
        resp = self.get(f"/fhir/{rtype}" + (f"?{query}" if query else ""), **kw)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        return resp.json

    def history_total(self, rtype: str | None = None) -> int:
        """Versions stored of one type, or of every type the service owns (its own audit trail aside)."""
        if rtype is None:
            types = [t for t in self.app.extensions["iop"].registry.types if t != "AuditEvent"]
            return sum(self.history_total(t) for t in types)
        resp = self.get(f"/fhir/{rtype}/_history")
        assert resp.status_code == 200, resp.get_data(as_text=True)
        return resp.json["total"]

    def seed(self, resource: dict[str, Any], rid: str | None = None) -> dict[str, Any]:
        """Store a resource the way the service itself would (not over the API), e.g. of a read-only type."""
        api = self.app.extensions["iop"].api
        with api.store.transaction() as tx:
            return api.repo.create(tx, resource, rid=rid).resource

    def admit_for(self, rtype: str, *patients: str) -> None:
        """Admit the patients that resources of `rtype` will point at (a Patient points at none)."""
        if rtype != "Patient":
            self.admit(*patients)

    def admit(self, *patients: str) -> None:
        """Where the service keeps Patients, make sure the patients the examples point at are known to it."""
        if "Patient" in self.app.extensions["iop"].registry.types:
            for patient in patients:
                if self.get(f"/fhir/Patient/{patient}").status_code == 404:
                    self.seed(minimal("Patient", patient), rid=patient)


def new_app(service: str, tmp_path: Path) -> Flask:
    factory = importlib.import_module(f"services.{service}.app").create_app
    return factory({"database": store_locator(tmp_path / f"{service}.db"), "max_body_bytes": MAX_BODY,
                    "auth_hs256_secret": TEST_SECRET})


@pytest.fixture(params=WRITABLE, ids=str)
def pair(request: pytest.FixtureRequest) -> Pair:
    return request.param


@pytest.fixture(params=READ_ONLY, ids=str)
def read_only(request: pytest.FixtureRequest) -> Pair:
    return request.param


@pytest.fixture(params=SERVICES)
def service(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def fhir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fhir]:
    """The service under test on a fresh store; for a type about patients, its patients are known."""
    names = request.fixturenames
    which = next(request.getfixturevalue(n) for n in ("pair", "read_only", "service") if n in names)
    app = new_app(which if isinstance(which, str) else which.service, tmp_path)
    server = Fhir(app)
    if isinstance(which, Pair) and which.rtype != "Patient":
        server.admit(ALICE, BOB, CAROL)
    yield server
    app.extensions["iop"].store.close()


# -- what every answer looks like -----------------------------------------------------------------


def assert_outcome(resp: TestResponse, status: int, expression: str | None = None,
                   code: str | None = None) -> dict[str, Any]:
    """An error: the status, an OperationOutcome body as application/fhir+json, errors only."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == FHIR_JSON
    outcome = json.loads(resp.get_data())
    assert outcome["resourceType"] == "OperationOutcome"
    validate_resource(outcome, "OperationOutcome")
    assert outcome["issue"] and {i["severity"] for i in outcome["issue"]} <= {"error", "fatal"}
    if expression is not None:
        assert any(expression in i.get("expression", []) for i in outcome["issue"]), outcome
    if code is not None:
        assert code in {i["code"] for i in outcome["issue"]}, outcome
    return outcome


def assert_searchset(bundle: dict[str, Any]) -> list[str]:
    """A valid searchset Bundle with total and a self link; the ids of its matches, in order."""
    validate_resource(bundle, "Bundle")
    assert bundle["type"] == "searchset"
    assert isinstance(bundle["total"], int)
    assert [link["relation"] for link in bundle["link"]].count("self") == 1
    for entry in bundle.get("entry", []):
        assert entry["search"]["mode"] == "match"
        assert entry["fullUrl"].endswith(f"/{entry['resource']['resourceType']}/{entry['resource']['id']}")
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((lk["url"] for lk in bundle["link"] if lk["relation"] == relation), None)


def criterion(rtype: str) -> str:
    """A search that matches the minimal example of `rtype` about any patient (for conditional create)."""
    shape = SHAPES[rtype]
    if shape.status_param:
        return f"{shape.status_param}={status_of(minimal(rtype, ALICE))}"
    if rtype == "Group":
        return "type=person"
    return "family=Rivera"  # Patient: not its identifier, on which the service never makes a duplicate


def sample(rtype: str, n: int) -> list[dict[str, Any]]:
    """`n` distinct resources of `rtype` (distinct patients, where the type is Patient itself)."""
    if rtype == "Patient":
        return [minimal(rtype, f"patient-{i}") for i in range(n)]
    return [minimal(rtype, (ALICE, BOB, CAROL)[i % 3]) for i in range(n)]


def revised(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource as a client sends it back after a harmless revision (a review tag)."""
    body = {k: v for k, v in resource.items() if k != "meta"}
    body["meta"] = {k: v for k, v in resource.get("meta", {}).items() if k not in ("versionId", "lastUpdated")}
    body["meta"]["tag"] = [TAG]
    return body


# -- create ---------------------------------------------------------------------------------------


def test_create_assigns_id_version_and_headers(fhir: Fhir, pair: Pair) -> None:
    sent = minimal(pair.rtype, ALICE)
    sent["id"] = "chosen-by-the-client"
    sent["meta"] = {**sent.get("meta", {}), "versionId": "42", "lastUpdated": "2001-01-01T00:00:00Z"}

    resp = fhir.post(f"/fhir/{pair.rtype}", sent)

    assert resp.status_code == 201, resp.get_data(as_text=True)
    assert resp.mimetype == FHIR_JSON
    body = resp.json
    rid = body["id"]
    assert rid != "chosen-by-the-client"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"] != "2001-01-01T00:00:00Z"
    assert body["meta"].get("profile") == sent["meta"].get("profile")  # what the client set in meta is kept
    assert resp.headers["Location"] == f"{fhir.base}/{pair.rtype}/{rid}/_history/1"
    assert resp.headers["ETag"] == 'W/"1"'
    last_modified = parsedate_to_datetime(resp.headers["Last-Modified"])
    assert last_modified.isoformat(timespec="seconds") == body["meta"]["lastUpdated"][:19] + "+00:00"
    assert {k: v for k, v in body.items() if k not in ("id", "meta")} == \
        {k: v for k, v in sent.items() if k not in ("id", "meta")}
    assert_outcome(fhir.get(f"/fhir/{pair.rtype}/chosen-by-the-client"), 404, code="not-found")
    assert fhir.history_total(pair.rtype) == 1


def test_conditional_create_creates_once_and_refuses_an_ambiguous_match(fhir: Fhir, pair: Pair) -> None:
    condition = {"If-None-Exist": criterion(pair.rtype)}
    first = fhir.post(f"/fhir/{pair.rtype}", minimal(pair.rtype, ALICE), headers=condition)
    assert first.status_code == 201, first.get_data(as_text=True)

    again = fhir.post(f"/fhir/{pair.rtype}", minimal(pair.rtype, ALICE), headers=condition)

    assert again.status_code == 200, again.get_data(as_text=True)
    assert again.json["id"] == first.json["id"]
    assert fhir.history_total(pair.rtype) == 1

    fhir.create(minimal(pair.rtype, BOB))
    ambiguous = fhir.post(f"/fhir/{pair.rtype}", minimal(pair.rtype, CAROL), headers=condition)

    assert_outcome(ambiguous, 412)
    assert fhir.history_total(pair.rtype) == 2


def test_conditional_create_with_an_unknown_parameter_is_400(fhir: Fhir, pair: Pair) -> None:
    resp = fhir.post(f"/fhir/{pair.rtype}", minimal(pair.rtype, ALICE), headers={"If-None-Exist": "colour=blue"})

    assert_outcome(resp, 400)
    assert fhir.history_total(pair.rtype) == 0


# -- read and vread -------------------------------------------------------------------------------


def test_read_and_vread_return_what_was_stored(fhir: Fhir, pair: Pair) -> None:
    created = fhir.create(minimal(pair.rtype, ALICE))
    rid = created["id"]

    read = fhir.get(f"/fhir/{pair.rtype}/{rid}")
    vread = fhir.get(f"/fhir/{pair.rtype}/{rid}/_history/1")

    for resp in (read, vread):
        assert resp.status_code == 200
        assert resp.mimetype == FHIR_JSON
        assert resp.json == created
        assert resp.headers["ETag"] == 'W/"1"'
        assert "Last-Modified" in resp.headers


def test_prefer_return_does_not_empty_a_read(fhir: Fhir, pair: Pair) -> None:
    created = fhir.create(minimal(pair.rtype, ALICE))

    resp = fhir.get(f"/fhir/{pair.rtype}/{created['id']}", headers={"Prefer": "return=minimal"})

    assert resp.json == created


def test_reading_what_does_not_exist_is_404(fhir: Fhir, pair: Pair) -> None:
    created = fhir.create(minimal(pair.rtype, ALICE))

    assert_outcome(fhir.get(f"/fhir/{pair.rtype}/no-such-id"), 404, code="not-found")
    assert_outcome(fhir.get(f"/fhir/{pair.rtype}/{created['id']}/_history/2"), 404, code="not-found")
    assert_outcome(fhir.get(f"/fhir/{pair.rtype}/{created['id']}/_history/first"), 404, code="not-found")


# -- update ---------------------------------------------------------------------------------------


def test_update_with_the_current_etag_makes_version_2(fhir: Fhir, pair: Pair) -> None:
    created = fhir.create(minimal(pair.rtype, ALICE))
    path = f"/fhir/{pair.rtype}/{created['id']}"

    resp = fhir.put(path, revised(created), headers={"If-Match": 'W/"1"'})

    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.json["meta"]["versionId"] == "2"
    assert resp.json["meta"]["tag"] == [TAG]
    assert resp.headers["ETag"] == 'W/"2"'
    assert fhir.get(path).json == resp.json
    assert fhir.get(f"{path}/_history/1").json == created


def test_update_with_a_stale_etag_is_412_and_changes_nothing(fhir: Fhir, pair: Pair) -> None:
    created = fhir.create(minimal(pair.rtype, ALICE))
    path = f"/fhir/{pair.rtype}/{created['id']}"
    current = fhir.put(path, revised(created), headers={"If-Match": 'W/"1"'}).json

    stale = fhir.put(path, revised(created), headers={"If-Match": 'W/"1"'})

    assert_outcome(stale, 412)
    assert fhir.get(path).json == current
    assert fhir.history_total(pair.rtype) == 2


@pytest.mark.parametrize("etag", ["version-one", 'W/"one"', "*", ""])
def test_update_with_a_malformed_etag_is_400(fhir: Fhir, pair: Pair, etag: str) -> None:
    created = fhir.create(minimal(pair.rtype, ALICE))

    resp = fhir.put(f"/fhir/{pair.rtype}/{created['id']}", revised(created), headers={"If-Match": etag})

    assert_outcome(resp, 400)
    assert fhir.history_total(pair.rtype) == 1


def test_update_whose_body_names_another_id_is_400(fhir: Fhir, pair: Pair) -> None:
    created = fhir.create(minimal(pair.rtype, ALICE))
    body = dict(revised(created), id="someone-else")

    assert_outcome(fhir.put(f"/fhir/{pair.rtype}/{created['id']}", body), 400)
    assert_outcome(fhir.put(f"/fhir/{pair.rtype}/{created['id']}", minimal(pair.rtype, ALICE)), 400)
    assert fhir.history_total(pair.rtype) == 1


def test_update_of_a_new_id_creates_it(fhir: Fhir, pair: Pair) -> None:
    body = dict(minimal(pair.rtype, ALICE), id="partner-chosen-1")

    resp = fhir.put(f"/fhir/{pair.rtype}/partner-chosen-1", body)

    assert resp.status_code == 201, resp.get_data(as_text=True)
    assert resp.json["id"] == "partner-chosen-1"
    assert resp.json["meta"]["versionId"] == "1"
    assert resp.headers["Location"] == f"{fhir.base}/{pair.rtype}/partner-chosen-1/_history/1"
    assert fhir.get(f"/fhir/{pair.rtype}/partner-chosen-1").json == resp.json


@pytest.mark.parametrize("prefer, has_body", [("return=minimal", False), ("return=representation", True),
                                              ("return=OperationOutcome", True)])
def test_prefer_return_shapes_create_and_update(fhir: Fhir, pair: Pair, prefer: str, has_body: bool) -> None:
    created = fhir.post(f"/fhir/{pair.rtype}", minimal(pair.rtype, ALICE), headers={"Prefer": prefer})
    location = created.headers["Location"]
    stored = fhir.follow(location).json
    updated = fhir.put(f"/fhir/{pair.rtype}/{stored['id']}", revised(stored), headers={"Prefer": prefer})

    for resp, status, version in ((created, 201, "1"), (updated, 200, "2")):
        assert resp.status_code == status
        assert resp.headers["ETag"] == f'W/"{version}"'
        if not has_body:
            assert resp.get_data() == b""
        elif prefer == "return=OperationOutcome":
            assert resp.json["resourceType"] == "OperationOutcome"
            assert {i["severity"] for i in resp.json["issue"]} == {"information"}
        else:
            assert resp.json["resourceType"] == pair.rtype
            assert resp.json["meta"]["versionId"] == version


# -- delete ---------------------------------------------------------------------------------------


def test_delete_then_read_is_410_and_old_versions_stay_readable(fhir: Fhir, pair: Pair) -> None:
    created = fhir.create(minimal(pair.rtype, ALICE))
    path = f"/fhir/{pair.rtype}/{created['id']}"

    resp = fhir.delete(path, headers={"Prefer": "return=OperationOutcome"})

    assert resp.status_code == 204
    assert resp.get_data() == b""
    assert_outcome(fhir.get(path), 410, code="deleted")
    assert fhir.get(f"{path}/_history/1").json == created
    assert_outcome(fhir.get(f"{path}/_history/2"), 410)
    assert fhir.search(pair.rtype, f"_id={created['id']}")["total"] == 0
    history = fhir.get(f"{path}/_history").json
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]
    assert fhir.delete(path).status_code == 204  # deleting again changes nothing
    assert fhir.get(f"{path}/_history").json["total"] == 2


# -- history --------------------------------------------------------------------------------------


def test_instance_history_lists_every_version_newest_first(fhir: Fhir, pair: Pair) -> None:
    v1 = fhir.create(minimal(pair.rtype, ALICE))
    path = f"/fhir/{pair.rtype}/{v1['id']}"
    v2 = fhir.put(path, revised(v1)).json
    v3 = fhir.put(path, dict(revised(v2), meta={"tag": [TAG, {**TAG, "code": "signed"}]})).json

    history = fhir.get(f"{path}/_history").json

    validate_resource(history, "Bundle")
    assert history["type"] == "history"
    assert history["total"] == 3
    assert [e["resource"] for e in history["entry"]] == [v3, v2, v1]
    assert [e["request"]["method"] for e in history["entry"]] == ["PUT", "PUT", "POST"]
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"3"', 'W/"2"', 'W/"1"']
    assert [e["response"]["status"] for e in history["entry"]] == ["200 OK", "200 OK", "201 Created"]
    assert {e["fullUrl"] for e in history["entry"]} == {f"{fhir.base}/{pair.rtype}/{v1['id']}"}


def test_type_history_counts_every_version_of_every_resource(fhir: Fhir, pair: Pair) -> None:
    first = fhir.create(minimal(pair.rtype, ALICE))
    fhir.create(minimal(pair.rtype, BOB))
    fhir.put(f"/fhir/{pair.rtype}/{first['id']}", revised(first))

    history = fhir.get(f"/fhir/{pair.rtype}/_history").json

    assert history["type"] == "history"
    assert history["total"] == 3
    assert [e["request"]["method"] for e in history["entry"]] == ["PUT", "POST", "POST"]
    assert [e["request"]["url"] for e in history["entry"]] == [f"{pair.rtype}/{first['id']}", pair.rtype,
                                                               pair.rtype]


def test_history_since_an_instant(fhir: Fhir, pair: Pair) -> None:
    early, late = fhir.create_apart(sample(pair.rtype, 2))
    since = late["meta"]["lastUpdated"]
    in_paris = datetime.fromisoformat(since.replace("Z", "+00:00")).astimezone(timezone(timedelta(hours=1)))
    as_offset = quote(in_paris.isoformat(timespec="milliseconds"))  # the same instant, written at +01:00

    for value in (since, as_offset):
        history = fhir.get(f"/fhir/{pair.rtype}/_history?_since={value}").json
        assert [e["resource"]["id"] for e in history["entry"]] == [late["id"]], value
    assert fhir.get(f"/fhir/{pair.rtype}/{early['id']}/_history?_since={since}").json["total"] == 0
    assert_outcome(fhir.get(f"/fhir/{pair.rtype}/_history?_since=last-tuesday"), 400, expression="_since")


def test_history_of_an_unknown_resource_is_404(fhir: Fhir, pair: Pair) -> None:
    assert_outcome(fhir.get(f"/fhir/{pair.rtype}/no-such-id/_history"), 404, code="not-found")


# -- search ---------------------------------------------------------------------------------------


def test_search_by_id(fhir: Fhir, pair: Pair) -> None:
    a, b, _ = (fhir.create(r) for r in sample(pair.rtype, 3))

    assert assert_searchset(fhir.search(pair.rtype, f"_id={a['id']}")) == [a["id"]]
    assert sorted(assert_searchset(fhir.search(pair.rtype, f"_id={a['id']},{b['id']}"))) == sorted([a["id"], b["id"]])
    assert fhir.search(pair.rtype, "_id=nobody")["total"] == 0


def about_a_patient(pair: Pair) -> bool:
    rdef = registry_of(pair.service).types[pair.rtype]
    return any(rdef.param(n) for n in ("patient", "subject"))


@pytest.mark.parametrize("pair", [p for p in WRITABLE if about_a_patient(p)], ids=str)
def test_search_by_patient_and_subject(fhir: Fhir, pair: Pair) -> None:
    rdef = registry_of(pair.service).types[pair.rtype]
    names = [n for n in ("patient", "subject") if rdef.param(n)]
    alices = {fhir.create(minimal(pair.rtype, ALICE))["id"] for _ in range(2)}
    fhir.create(minimal(pair.rtype, BOB))

    for name in names:
        for value in (f"Patient/{ALICE}", ALICE, f"{fhir.base}/Patient/{ALICE}"):
            bundle = fhir.search(pair.rtype, f"{name}={value}")
            assert set(assert_searchset(bundle)) == alices, (name, value)
            assert bundle["total"] == 2


@pytest.mark.parametrize("pair", [p for p in WRITABLE if SHAPES[p.rtype].patient_param], ids=str)
def test_search_by_a_bare_patient_id_is_case_sensitive(fhir: Fhir, pair: Pair) -> None:
    name = SHAPES[pair.rtype].patient_param
    fhir.admit("Alice", "alice")
    upper = fhir.create(minimal(pair.rtype, "Alice"))
    fhir.create(minimal(pair.rtype, "alice"))

    assert assert_searchset(fhir.search(pair.rtype, f"{name}=Alice")) == [upper["id"]]


@pytest.mark.parametrize("pair", [p for p in WRITABLE if SHAPES[p.rtype].status_param], ids=str)
def test_search_by_status(fhir: Fhir, pair: Pair) -> None:
    shape = SHAPES[pair.rtype]
    usual = minimal(pair.rtype, ALICE)
    first = fhir.create(usual)
    other = fhir.create(with_status(usual, shape.other_status))
    if status_of(other) != shape.other_status:  # the server sets the first status itself (Subscription)
        other = fhir.put(f"/fhir/{pair.rtype}/{other['id']}", with_status(revised(other), shape.other_status)).json
    assert status_of(other) == shape.other_status

    status = status_of(usual)
    assert assert_searchset(fhir.search(pair.rtype, f"{shape.status_param}={status}")) == [first["id"]]
    assert assert_searchset(fhir.search(pair.rtype, f"{shape.status_param}={shape.other_status}")) == [other["id"]]
    both = fhir.search(pair.rtype, f"{shape.status_param}={status},{shape.other_status}")
    assert sorted(assert_searchset(both)) == sorted([first["id"], other["id"]])
    assert fhir.search(pair.rtype, f"{shape.status_param}=entered-in-error")["total"] == 0


def test_search_by_last_updated(fhir: Fhir, pair: Pair) -> None:
    early, late = fhir.create_apart([minimal(pair.rtype, ALICE), minimal(pair.rtype, BOB)])
    cut = early["meta"]["lastUpdated"]

    assert assert_searchset(fhir.search(pair.rtype, f"_lastUpdated=gt{cut}")) == [late["id"]]
    assert assert_searchset(fhir.search(pair.rtype, f"_lastUpdated=lt{late['meta']['lastUpdated']}")) == \
        [early["id"]]
    assert len(assert_searchset(fhir.search(pair.rtype, f"_lastUpdated=ge{cut}"))) == 2
    assert fhir.search(pair.rtype, "_lastUpdated=lt2000-01-01")["total"] == 0
    assert_outcome(fhir.get(f"/fhir/{pair.rtype}?_lastUpdated=gtyesterday"), 400)


def test_paging_follows_next_and_previous_links(fhir: Fhir, pair: Pair) -> None:
    ids = {fhir.create(r)["id"] for r in sample(pair.rtype, 7)}
    bundle = fhir.search(pair.rtype, "_count=3")
    pages: list[list[str]] = []

    while True:
        assert bundle["total"] == 7
        pages.append(assert_searchset(bundle))
        if not (next_url := link(bundle, "next")):
            break
        resp = fhir.follow(next_url)
        assert resp.status_code == 200
        bundle = resp.json

    assert [len(p) for p in pages] == [3, 3, 1]
    seen = [rid for page in pages for rid in page]
    assert sorted(seen) == sorted(ids)  # each once
    back = fhir.follow(link(bundle, "previous")).json
    assert assert_searchset(back) == pages[1]
    assert link(fhir.follow(link(back, "previous")).json, "previous") is None


# One writable type of each service, for the paging rules that do not depend on the type.
PAGED = [next(p for p in WRITABLE if p.service == s) for s in SERVICES]


def pages_of(fhir: Fhir, bundle: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The bundle and every page its next links lead to."""
    while True:
        yield bundle
        if not (next_url := link(bundle, "next")):
            return
        resp = fhir.follow(next_url)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        bundle = resp.json


@pytest.mark.parametrize("pair", PAGED, ids=str)
def test_next_links_page_by_key_so_a_resource_created_or_deleted_between_pages_shifts_nothing(
        fhir: Fhir, pair: Pair) -> None:
    ids = [fhir.create(r)["id"] for r in sample(pair.rtype, 6)]
    first = fhir.search(pair.rtype, "_count=2")
    next_query = dict(parse_qsl(urlsplit(link(first, "next")).query))
    assert "_cursor" in next_query and "_offset" not in next_query

    assert fhir.delete(f"/fhir/{pair.rtype}/{ids[0]}").status_code in (200, 204)  # one already seen goes
    late = fhir.create(sample(pair.rtype, 1)[0])["id"]  # and one arrives
    seen = [rid for page in pages_of(fhir, first) for rid in assert_searchset(page)]

    assert seen == [*ids, late]  # by offset, the deletion would have skipped ids[2]


@pytest.mark.parametrize("pair", PAGED, ids=str)
def test_pages_sorted_by_last_updated_follow_by_key_both_ways(fhir: Fhir, pair: Pair) -> None:
    created = [c["id"] for c in fhir.create_apart(sample(pair.rtype, 5))]
    for sort, expected in (("_lastUpdated", created), ("-_lastUpdated", created[::-1])):
        pages = list(pages_of(fhir, fhir.search(pair.rtype, f"_sort={sort}&_count=2")))
        assert [rid for page in pages for rid in assert_searchset(page)] == expected
        back = fhir.follow(link(pages[-1], "previous")).json
        assert assert_searchset(back) == expected[2:4]
        assert "_cursor" in link(back, "self")


@pytest.mark.parametrize("pair", PAGED, ids=str)
def test_a_cursor_not_given_by_this_search_is_400(fhir: Fhir, pair: Pair) -> None:
    for r in sample(pair.rtype, 3):
        fhir.create(r)
    by_update = dict(parse_qsl(urlsplit(link(fhir.search(pair.rtype, "_count=1&_sort=_lastUpdated"),
                                              "next")).query))["_cursor"]

    for cursor in ("not-a-cursor", "WyJjcmVhdGVkIiwibiIsIngiXQ", by_update[:-2], "%00", ""):
        assert_outcome(fhir.get(f"/fhir/{pair.rtype}?_cursor={quote(cursor)}"), 400, expression="_cursor")
    # a cursor of one order is refused by a search in another
    assert_outcome(fhir.get(f"/fhir/{pair.rtype}?_cursor={by_update}"), 400, expression="_cursor")


@pytest.mark.parametrize("pair", PAGED, ids=str)
def test_total_is_counted_up_to_a_bound_unless_asked_to_be_accurate(
        fhir: Fhir, pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shared.fhir.query.COUNT_BOUND", 3)
    for r in sample(pair.rtype, 5):
        fhir.create(r)

    for query in ("_count=2", "_count=2&_total=estimate"):  # past the bound: no total rather than a wrong one
        bundle = fhir.search(pair.rtype, query)
        assert "total" not in bundle and link(bundle, "next") and len(bundle["entry"]) == 2
    assert fhir.search(pair.rtype, "_count=2&_total=accurate")["total"] == 5
    assert "total" not in fhir.search(pair.rtype, "_count=2&_total=none")
    assert fhir.search(pair.rtype, "_count=0")["total"] == 5  # a search for the total alone counts it
    assert fhir.search(pair.rtype, "_id=no-such-id&_total=estimate")["total"] == 0  # within the bound: exact


def test_count_zero_gives_the_total_and_no_next_link(fhir: Fhir, pair: Pair) -> None:
    for patient in (ALICE, BOB):
        fhir.create(minimal(pair.rtype, patient))

    bundle = fhir.search(pair.rtype, "_count=0")

    assert bundle["total"] == 2
    assert assert_searchset(bundle) == []
    assert link(bundle, "next") is None


def test_count_is_capped_and_must_be_a_number(fhir: Fhir, pair: Pair) -> None:
    fhir.create(minimal(pair.rtype, ALICE))

    capped = fhir.search(pair.rtype, "_count=5000")

    assert dict(parse_qsl(urlsplit(link(capped, "self")).query))["_count"] == "1000"
    assert_outcome(fhir.get(f"/fhir/{pair.rtype}?_count=many"), 400, expression="_count")
    assert_outcome(fhir.get(f"/fhir/{pair.rtype}?_count=-1"), 400, expression="_count")


def test_sort_by_last_updated_descending(fhir: Fhir, pair: Pair) -> None:
    created = fhir.create_apart(sample(pair.rtype, 3))

    bundle = fhir.search(pair.rtype, "_sort=-_lastUpdated")

    assert assert_searchset(bundle) == [c["id"] for c in reversed(created)]
    assert ("_sort", "-_lastUpdated") in parse_qsl(urlsplit(link(bundle, "self")).query)
    assert assert_searchset(fhir.search(pair.rtype, "_sort=_lastUpdated")) == [c["id"] for c in created]


def test_search_by_post_with_a_form_body(fhir: Fhir, pair: Pair) -> None:
    a = fhir.create(minimal(pair.rtype, ALICE))
    fhir.create(minimal(pair.rtype, BOB))

    resp = fhir.post(f"/fhir/{pair.rtype}/_search", f"_id={a['id']}",
                     content_type="application/x-www-form-urlencoded")

    assert resp.status_code == 200
    assert assert_searchset(resp.json) == [a["id"]]


def test_an_unknown_search_parameter_is_ignored_unless_strict(fhir: Fhir, pair: Pair) -> None:
    a = fhir.create(minimal(pair.rtype, ALICE))

    lenient = fhir.search(pair.rtype, f"favourite-colour=blue&_id={a['id']}")
    strict = fhir.get(f"/fhir/{pair.rtype}?favourite-colour=blue&_id={a['id']}",
                      headers={"Prefer": "handling=strict"})

    assert assert_searchset(lenient) == [a["id"]]
    self_query = dict(parse_qsl(urlsplit(link(lenient, "self")).query))
    assert "favourite-colour" not in self_query
    assert self_query["_id"] == a["id"]
    assert_outcome(strict, 400, expression="favourite-colour")


def test_an_empty_search_is_a_searchset_of_nothing(fhir: Fhir, pair: Pair) -> None:
    bundle = fhir.search(pair.rtype)

    assert assert_searchset(bundle) == []
    assert bundle["total"] == 0
    assert link(bundle, "self").startswith(f"{fhir.base}/{pair.rtype}")
    assert link(bundle, "next") is None


# -- bad input: refused with an OperationOutcome, nothing stored ----------------------------------


def _nested(depth: int) -> Any:
    node: Any = "deep"
    for _ in range(depth):
        node = [node]
    return node


def _bad_bodies(rtype: str) -> dict[str, tuple[int, Any, str | None, str | None]]:
    """case -> (status, body, expected expression, content type); the body is for the type `rtype`."""
    good = minimal(rtype, ALICE)
    other_type = "Observation" if rtype != "Observation" else "Patient"
    date_expr = rtype + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in SHAPES[rtype].date_path)
    return {
        "malformed-json": (400, b'{"resourceType": "' + rtype.encode() + b'", "status": ', None, None),
        "not-an-object": (400, b"[1, 2, 3]", None, None),
        "no-resource-type": (400, {k: v for k, v in good.items() if k != "resourceType"}, None, None),
        "wrong-resource-type": (422, minimal(other_type, ALICE), "resourceType", None),
        "unknown-element": (422, {**good, "favouriteColour": "blue"}, f"{rtype}.favouriteColour", None),
        "invalid-date": (422, with_date(good, "2025-02-30"), date_expr, None),
        "bad-status-code": (422, with_status(good, "done-and-dusted"),
                            f"{rtype}.{SHAPES[rtype].status_element}", None),
        "oversize": (413, {**good, "implicitRules": "https://example.org/" + "a" * MAX_BODY}, None, None),
        "nested-too-deep": (400, {**good, "contained": _nested(70)}, None, None),
        "wrong-media-type": (415, good, None, "text/plain"),
        "form-media-type": (415, good, None, "application/x-www-form-urlencoded"),
    }


BAD_CASES = list(_bad_bodies("Patient"))


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_create_is_refused_and_nothing_stored(fhir: Fhir, pair: Pair, case: str) -> None:
    status, body, expression, content_type = _bad_bodies(pair.rtype)[case]
    before = fhir.history_total()

    resp = fhir.post(f"/fhir/{pair.rtype}", body, content_type=content_type or FHIR_JSON)

    assert_outcome(resp, status, expression=expression)
    assert fhir.history_total() == before


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_update_is_refused_and_nothing_changes(fhir: Fhir, pair: Pair, case: str) -> None:
    created = fhir.create(minimal(pair.rtype, ALICE))
    path = f"/fhir/{pair.rtype}/{created['id']}"
    status, body, expression, content_type = _bad_bodies(pair.rtype)[case]
    if isinstance(body, dict):
        body = {**body, "id": created["id"]}
    before = fhir.history_total()

    resp = fhir.put(path, body, content_type=content_type or FHIR_JSON)

    assert_outcome(resp, status, expression=expression)
    assert fhir.history_total() == before
    assert fhir.get(path).json == created


UNSAFE_IDS = {"traversal": "..%2F..%2Fetc%2Fpasswd", "dot-dot": "..", "too-long": "a" * 65, "space": "a%20b",
              "underscore": "a_b"}


@pytest.mark.parametrize("unsafe", list(UNSAFE_IDS), ids=list(UNSAFE_IDS))
def test_an_unsafe_id_in_the_url_is_400(fhir: Fhir, pair: Pair, unsafe: str) -> None:
    rid = UNSAFE_IDS[unsafe]
    fhir.create(minimal(pair.rtype, ALICE))
    path = f"/fhir/{pair.rtype}/{rid}"
    before = fhir.history_total()

    answers = {"read": fhir.get(path), "vread": fhir.get(f"{path}/_history/1"),
               "history": fhir.get(f"{path}/_history"), "delete": fhir.delete(path),
               "update": fhir.put(path, dict(minimal(pair.rtype, ALICE), id=rid))}

    for interaction, resp in answers.items():
        assert resp.status_code == 400, interaction
        assert_outcome(resp, 400)
    assert fhir.history_total() == before


def test_an_unknown_type_or_route_is_404(fhir: Fhir, pair: Pair) -> None:
    before = fhir.history_total()
    assert_outcome(fhir.get("/fhir/Basic"), 404)
    assert_outcome(fhir.post("/fhir/Basic", {"resourceType": "Basic", "code": {"text": "x"}}), 404)
    assert_outcome(fhir.get(f"/fhir/{pair.rtype}/some-id/_history/1/extra"), 404)
    assert fhir.history_total() == before


def test_a_fhir_version_parameter_on_the_media_type_is_accepted(fhir: Fhir, pair: Pair) -> None:
    resp = fhir.post(f"/fhir/{pair.rtype}", minimal(pair.rtype, ALICE),
                     content_type="application/fhir+json; fhirVersion=4.0; charset=utf-8")

    assert resp.status_code == 201, resp.get_data(as_text=True)


# -- $validate ------------------------------------------------------------------------------------


@pytest.fixture(params=PAIRS, ids=str)
def any_pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Fhir, Pair]]:
    app = new_app(request.param.service, tmp_path)
    yield Fhir(app), request.param
    app.extensions["iop"].store.close()


def test_validate_operation_reports_and_stores_nothing(any_pair: tuple[Fhir, Pair]) -> None:
    fhir, p = any_pair
    good = minimal(p.rtype, ALICE)
    bad = with_status(good, "done-and-dusted")
    before = fhir.history_total()

    valid = fhir.post(f"/fhir/{p.rtype}/$validate", good)
    invalid = fhir.post(f"/fhir/{p.rtype}/$validate", bad)
    wrapped = fhir.post(f"/fhir/{p.rtype}/$validate",
                        {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": bad}]})

    assert valid.status_code == 200
    assert valid.json["resourceType"] == "OperationOutcome"
    assert {i["severity"] for i in valid.json["issue"]} == {"information"}
    for resp in (invalid, wrapped):
        assert resp.status_code == 200
        assert resp.mimetype == FHIR_JSON
        errors = [i for i in resp.json["issue"] if i["severity"] == "error"]
        assert errors and errors[0]["expression"] == [f"{p.rtype}.{SHAPES[p.rtype].status_element}"]
    assert fhir.history_total() == before


# -- read-only types ------------------------------------------------------------------------------


def test_a_read_only_type_can_be_read_and_searched_but_not_written(fhir: Fhir, read_only: Pair) -> None:
    served = fhir.search(read_only.rtype).get("entry", [])
    stored = served[0]["resource"] if served else fhir.seed(minimal(read_only.rtype, ALICE))
    path = f"/fhir/{read_only.rtype}/{stored['id']}"

    assert fhir.get(path).json == stored
    assert fhir.get(f"{path}/_history/1").json == stored
    assert assert_searchset(fhir.search(read_only.rtype, f"_id={stored['id']}")) == [stored["id"]]
    if status_param := SHAPES[read_only.rtype].status_param:
        status = status_of(stored)
        assert stored["id"] in assert_searchset(fhir.search(read_only.rtype, f"{status_param}={status}"))
    before = fhir.history_total()
    assert_outcome(fhir.post(f"/fhir/{read_only.rtype}", minimal(read_only.rtype, ALICE)), 405)
    assert_outcome(fhir.put(path, revised(stored)), 405)
    assert_outcome(fhir.put(f"{path}-copy", dict(stored, id=f"{stored['id']}-copy")), 405)
    assert_outcome(fhir.delete(path), 405)
    assert_outcome(fhir.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": minimal(read_only.rtype, ALICE), "request": {"method": "POST", "url": read_only.rtype}}]}), 405)
    batch = fhir.post("/fhir", {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": minimal(read_only.rtype, ALICE), "request": {"method": "POST", "url": read_only.rtype}}]})
    assert batch.json["entry"][0]["response"]["status"] == "405"
    assert fhir.history_total() == before
    assert fhir.get(path).json == stored


# -- transactions and batches at the service base -------------------------------------------------

PATIENT_URN = "urn:uuid:6d1d1c2e-7d55-4b7e-9a0e-0a6f5b8f1a01"
REFERRAL_URN = "urn:uuid:6d1d1c2e-7d55-4b7e-9a0e-0a6f5b8f1a02"
GOAL_URN = "urn:uuid:6d1d1c2e-7d55-4b7e-9a0e-0a6f5b8f1a03"
PARTNER_BUNDLES = "https://referrals.example.org/fhir/NamingSystem/submission"


def entry(resource: dict[str, Any], full_url: str | None = None, method: str = "POST", url: str | None = None,
          **request: str) -> dict[str, Any]:
    return {**({"fullUrl": full_url} if full_url else {}), "resource": resource,
            "request": {"method": method, "url": url or resource["resourceType"], **request}}


def bundle(kind: str, *entries: dict[str, Any], identifier: str | None = None) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries),
            **({"identifier": {"system": PARTNER_BUNDLES, "value": identifier}} if identifier else {})}


def first_type(service: str) -> str:
    return next(p.rtype for p in WRITABLE if p.service == service)


def created_id(response_entry: dict[str, Any]) -> str:
    return response_entry["response"]["location"].split("/")[1]


def post_bundle(fhir: Fhir, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    resp = fhir.post("/fhir", body, **kw)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    validate_resource(resp.json, "Bundle")
    assert resp.json["type"] == f"{body['type']}-response"
    return resp.json


@pytest.mark.parametrize("service", ["intake"])
def test_a_referral_transaction_links_patient_referral_and_answers(fhir: Fhir, service: str) -> None:
    answers = minimal("QuestionnaireResponse", "placeholder")
    answers["subject"] = {"reference": PATIENT_URN}
    answers["basedOn"] = [{"reference": REFERRAL_URN}]
    referral = minimal("ServiceRequest", "placeholder")
    referral["subject"] = {"reference": PATIENT_URN}

    result = post_bundle(fhir, bundle("transaction", entry(answers), entry(referral, REFERRAL_URN),
                                      entry(minimal("Patient", "dana-okafor"), PATIENT_URN)))

    assert [e["response"]["status"] for e in result["entry"]] == ["201 Created"] * 3
    qr_id, sr_id, patient_id = (created_id(e) for e in result["entry"])
    stored = fhir.get(f"/fhir/QuestionnaireResponse/{qr_id}").json
    assert stored["subject"] == {"reference": f"Patient/{patient_id}"}
    assert stored["basedOn"] == [{"reference": f"ServiceRequest/{sr_id}"}]
    assert fhir.get(f"/fhir/ServiceRequest/{sr_id}").json["subject"] == {"reference": f"Patient/{patient_id}"}
    assert assert_searchset(fhir.search("QuestionnaireResponse", f"patient={patient_id}")) == [qr_id]


@pytest.mark.parametrize("service", ["careplan"])
def test_a_plan_transaction_links_the_care_plan_to_its_goal(fhir: Fhir, service: str) -> None:
    plan = minimal("CarePlan", ALICE)
    plan["goal"] = [{"reference": GOAL_URN}]

    result = post_bundle(fhir, bundle("transaction", entry(plan), entry(minimal("Goal", ALICE), GOAL_URN)))

    plan_id, goal_id = (created_id(e) for e in result["entry"])
    assert fhir.get(f"/fhir/CarePlan/{plan_id}").json["goal"] == [{"reference": f"Goal/{goal_id}"}]
    assert result["entry"][1]["resource"]["id"] == goal_id
    assert assert_searchset(fhir.search("CarePlan", f"goal=Goal/{goal_id}")) == [plan_id]


def test_a_transaction_with_one_invalid_entry_stores_nothing(fhir: Fhir, service: str) -> None:
    rtype = first_type(service)
    bad = with_status(minimal(rtype, BOB), "done-and-dusted")
    before = fhir.history_total()

    resp = fhir.post("/fhir", bundle("transaction", entry(minimal(rtype, ALICE)), entry(bad)))

    assert_outcome(resp, 422, expression=f"Bundle.entry[1].resource.{SHAPES[rtype].status_element}")
    assert fhir.history_total() == before


def test_a_transaction_failing_midway_rolls_back_what_it_wrote(fhir: Fhir, service: str) -> None:
    rtype = first_type(service)
    fhir.admit_for(rtype, ALICE, BOB)
    existing = fhir.create(minimal(rtype, ALICE))
    stale = entry(revised(existing), method="PUT", url=f"{rtype}/{existing['id']}", ifMatch='W/"7"')
    before = fhir.history_total()

    resp = fhir.post("/fhir", bundle("transaction", entry(minimal(rtype, BOB)), stale))

    assert_outcome(resp, 412)
    assert fhir.history_total() == before
    assert fhir.get(f"/fhir/{rtype}/{existing['id']}").json == existing


def test_if_none_exist_inside_a_transaction_matches_instead_of_creating(fhir: Fhir, service: str) -> None:
    rtype = first_type(service)
    conditional = entry(minimal(rtype, ALICE), ifNoneExist=criterion(rtype))

    first = post_bundle(fhir, bundle("transaction", conditional))
    after_first = fhir.history_total()
    second = post_bundle(fhir, bundle("transaction", conditional))

    assert first["entry"][0]["response"]["status"] == "201 Created"
    assert second["entry"][0]["response"]["status"] == "200 OK"
    assert created_id(second["entry"][0]) == created_id(first["entry"][0])
    assert fhir.history_total(rtype) == 1
    assert fhir.history_total() == after_first


CONDITIONAL_REFS = {"intake": ("Patient", "QuestionnaireResponse", "subject"),
                    "careplan": ("Goal", "CarePlan", "goal")}


@pytest.mark.parametrize("service", list(CONDITIONAL_REFS))
def test_a_conditional_reference_resolves_to_the_one_match(fhir: Fhir, service: str) -> None:
    target_type, referrer_type, element = CONDITIONAL_REFS[service]
    target = minimal(target_type, ALICE)
    target["identifier"] = [{"system": examples.PARTNER_MRN, "value": "ID-7"}]
    target_id = fhir.create(target)["id"]
    fhir.admit(ALICE)
    before = fhir.history_total()
    referrer = minimal(referrer_type, ALICE)
    reference = {"reference": f"{target_type}?identifier={examples.PARTNER_MRN}|ID-7"}
    referrer[element] = [reference] if element == "goal" else reference

    result = post_bundle(fhir, bundle("transaction", entry(referrer)))

    stored = fhir.get(f"/fhir/{referrer_type}/{created_id(result['entry'][0])}").json
    resolved = stored[element][0] if element == "goal" else stored[element]
    assert resolved == {"reference": f"{target_type}/{target_id}"}
    after = fhir.history_total()
    assert after > before
    reference["reference"] = reference["reference"].replace("ID-7", "ID-8")
    assert_outcome(fhir.post("/fhir", bundle("transaction", entry(referrer))), 412)
    assert fhir.history_total() == after


def test_a_batch_answers_each_entry_on_its_own(fhir: Fhir, service: str) -> None:
    rtype = first_type(service)
    bad = with_status(minimal(rtype, BOB), "done-and-dusted")
    fhir.admit_for(rtype, ALICE, BOB)
    before = fhir.history_total()

    result = post_bundle(fhir, bundle("batch", entry(minimal(rtype, ALICE)), entry(bad),
                                      entry(minimal(rtype, BOB), method="GET", url=f"{rtype}/nobody")))

    good, refused, missing = (e["response"] for e in result["entry"])
    assert good["status"] == "201 Created"
    assert refused["status"] == "422"
    assert refused["outcome"]["issue"][0]["expression"] == [
        f"Bundle.entry[1].resource.{SHAPES[rtype].status_element}"]
    assert missing["status"] == "404"
    assert fhir.history_total(rtype) == 1
    assert fhir.history_total() > before
    assert fhir.get(f"/fhir/{good['location'].rsplit('/_history', 1)[0]}").status_code == 200


@pytest.mark.parametrize("kind", ["batch", "transaction"])
@pytest.mark.parametrize("wanted", ["minimal", "OperationOutcome"])
def test_prefer_return_shapes_the_entries_not_the_response_bundle(fhir: Fhir, service: str, kind: str,
                                                                    wanted: str) -> None:
    rtype = first_type(service)
    fhir.admit_for(rtype, ALICE, BOB)

    resp = fhir.post("/fhir", bundle(kind, entry(minimal(rtype, ALICE)), entry(minimal(rtype, BOB))),
                     headers={"Prefer": f"return={wanted}"})

    assert resp.status_code == 200
    assert resp.json["type"] == f"{kind}-response"
    assert [e["response"]["status"] for e in resp.json["entry"]] == ["201 Created", "201 Created"]
    assert all("resource" not in e for e in resp.json["entry"])
    if wanted == "OperationOutcome":
        assert all(e["response"]["outcome"]["resourceType"] == "OperationOutcome" for e in resp.json["entry"])


def test_a_post_entry_must_name_its_own_type(fhir: Fhir, service: str) -> None:
    rtype = first_type(service)
    wrong_url = entry(minimal(rtype, ALICE), url="Basic")
    before = fhir.history_total()

    assert_outcome(fhir.post("/fhir", bundle("transaction", wrong_url)), 400)
    assert post_bundle(fhir, bundle("batch", wrong_url))["entry"][0]["response"]["status"] == "400"
    assert fhir.history_total() == before


@pytest.mark.parametrize("how", ["bundle-identifier", "idempotency-key"])
def test_a_repeated_submission_returns_the_first_answer_and_creates_nothing(fhir: Fhir, service: str,
                                                                            how: str) -> None:
    rtype = first_type(service)
    fhir.admit_for(rtype, ALICE, BOB, CAROL)
    before = fhir.history_total()
    submission = bundle("transaction", entry(minimal(rtype, ALICE)), entry(minimal(rtype, BOB)),
                        identifier="submission-1" if how == "bundle-identifier" else None)
    headers = {"Idempotency-Key": "3f1c2b7e-submission-1"} if how == "idempotency-key" else {}

    first = fhir.post("/fhir", submission, headers=headers)
    after_first = fhir.history_total()
    second = fhir.post("/fhir", submission, headers=headers)

    assert first.status_code == second.status_code == 200
    assert second.json == first.json
    assert fhir.history_total() == after_first > before
    different = bundle("transaction", entry(minimal(rtype, CAROL)), identifier="submission-2")
    assert fhir.post("/fhir", different).status_code == 200
    assert fhir.history_total() > after_first


@pytest.mark.parametrize("how", ["bundle-identifier", "idempotency-key"])
def test_a_different_submission_under_a_used_identifier_or_key_is_refused_and_creates_nothing(
        fhir: Fhir, service: str, how: str) -> None:
    rtype = first_type(service)
    fhir.admit_for(rtype, ALICE, BOB)
    headers = {"Idempotency-Key": "5d0a-submission-1"} if how == "idempotency-key" else {}
    identifier = "submission-1" if how == "bundle-identifier" else None
    assert fhir.post("/fhir", bundle("transaction", entry(minimal(rtype, ALICE)), identifier=identifier),
                     headers=headers).status_code == 200
    after_first = fhir.history_total()

    other = fhir.post("/fhir", bundle("transaction", entry(minimal(rtype, BOB)), identifier=identifier),
                      headers=headers)

    assert_outcome(other, 422)
    assert "already used for a different request" in other.json["issue"][0]["diagnostics"]
    assert fhir.history_total() == after_first


def test_a_repeated_create_with_an_idempotency_key_creates_once(fhir: Fhir, pair: Pair) -> None:
    headers = {"Idempotency-Key": "9b2e-create-1"}
    before = fhir.history_total()

    first = fhir.post(f"/fhir/{pair.rtype}", minimal(pair.rtype, ALICE), headers=headers)
    second = fhir.post(f"/fhir/{pair.rtype}", minimal(pair.rtype, ALICE), headers=headers)

    assert first.status_code == second.status_code == 201
    assert second.json == first.json
    assert second.headers["Location"] == first.headers["Location"]
    assert fhir.history_total(pair.rtype) == 1
    assert fhir.history_total() > before


def test_the_base_accepts_only_batch_and_transaction_bundles(fhir: Fhir, service: str) -> None:
    rtype = first_type(service)
    before = fhir.history_total()

    assert_outcome(fhir.post("/fhir", bundle("collection", {"resource": minimal(rtype, ALICE)})), 422)
    assert_outcome(fhir.post("/fhir", minimal(rtype, ALICE)), 422)
    assert_outcome(fhir.post("/fhir", b"{not json"), 400)
    assert_outcome(fhir.post("/fhir", bundle("transaction"), content_type="text/plain"), 415)
    assert fhir.history_total() == before


# -- CapabilityStatement --------------------------------------------------------------------------

READ_INTERACTIONS = {"read", "vread", "history-instance", "history-type", "search-type"}
WRITE_INTERACTIONS = {"create", "update", "patch", "delete"}
PROBE_VALUES = {"token": "x", "reference": "Patient/x", "date": "2025", "string": "x"}


def test_capability_statement_claims_what_is_served_and_nothing_else(fhir: Fhir, service: str) -> None:
    resp = fhir.get("/fhir/metadata")
    registry = registry_of(service)

    assert resp.status_code == 200
    assert resp.mimetype == FHIR_JSON
    statement = resp.json
    validate_resource(statement, "CapabilityStatement")
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance"
    assert FHIR_JSON in statement["format"]
    assert statement["implementationGuide"] == [uscore.IMPLEMENTATION_GUIDE]  # every service serves a US Core type
    [rest] = statement["rest"]
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch", "history-system"}
    assert sorted(r["type"] for r in rest["resource"]) == sorted(registry.types)
    for claimed in rest["resource"]:
        rdef = registry.types[claimed["type"]]
        expected = READ_INTERACTIONS | (set() if rdef.read_only else WRITE_INTERACTIONS)
        assert {i["code"] for i in claimed["interaction"]} == expected, claimed["type"]
        assert {p["name"]: p["type"] for p in claimed["searchParam"]} == \
            {p.name: p.kind for p in rdef.all_params}
        assert claimed["conditionalCreate"] is (not rdef.read_only)
        assert claimed["updateCreate"] is (not rdef.read_only)
        assert claimed["conditionalUpdate"] is (not rdef.read_only)
        assert claimed["conditionalDelete"] == ("not-supported" if rdef.read_only else "single")
        assert "conditionalRead" not in claimed
        assert claimed.get("supportedProfile", []) == uscore.supported_profiles(claimed["type"])
        for include in claimed.get("searchInclude", []):
            assert include.split(":")[1] in {p.name for p in rdef.all_params if p.kind == "reference"}
        for revinclude in claimed.get("searchRevInclude", []):
            source, name = revinclude.split(":")
            assert registry.types[source].param(name).kind == "reference"
        assert sorted(o["name"] for o in claimed.get("operation", [])) == \
            sorted(op.name for (t, _, _), op in registry.operations.items() if t == claimed["type"])


def test_every_claimed_search_parameter_is_understood(fhir: Fhir, service: str) -> None:
    statement = fhir.get("/fhir/metadata").json

    for claimed in statement["rest"][0]["resource"]:
        for param in claimed["searchParam"]:
            query = f"{param['name']}={PROBE_VALUES[param['type']]}"
            resp = fhir.get(f"/fhir/{claimed['type']}?{query}", headers={"Prefer": "handling=strict"})
            assert resp.status_code == 200, (claimed["type"], query, resp.get_data(as_text=True))
            assert_searchset(resp.json)
