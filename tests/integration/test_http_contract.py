"""The HTTP contract around every FHIR answer: content negotiation (406), where a matched create points
(Location, ETag), tokens whose claims have the wrong JSON type (401), and the record a server error leaves."""
from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from shared.logs import JsonFormatter
from tests.integration.test_fhir_conformance import ALICE, Fhir, assert_outcome
from tests.support.auth import TEST_SECRET
from tests.support.examples import PARTNER_MRN, minimal

# -- 406 ------------------------------------------------------------------------------------------

ACCEPTED = ["application/fhir+json", "application/json", "application/json+fhir", "*/*", "application/*",
            "application/fhir+json; fhirVersion=4.0", "application/fhir+json; charset=utf-8",
            "application/xml;q=0.9, application/fhir+json;q=0.8", "text/html, */*;q=0.1", "*"]
REFUSED = ["application/xml", "application/fhir+xml", "text/html", "text/*", "application/fhir+json;q=0",
           "application/fhir+json; fhirVersion=3.0", "image/png, application/pdf"]


@pytest.mark.parametrize("accept", ACCEPTED)
def test_an_accept_the_server_can_produce_is_answered(open_service: Callable[..., Fhir], accept: str) -> None:
    fhir = open_service("careplan")
    for path in ("/fhir/Goal", "/fhir/metadata", "/fhir/_history"):
        resp = fhir.get(path, headers={"Accept": accept})
        assert resp.status_code == 200, (path, resp.get_data(as_text=True))
        assert resp.mimetype == "application/fhir+json"


@pytest.mark.parametrize("accept", REFUSED)
def test_an_accept_the_server_cannot_produce_is_406(open_service: Callable[..., Fhir], accept: str) -> None:
    fhir = open_service("careplan")
    before = fhir.history_total("Goal")

    for method, path, body in (("GET", "/fhir/Goal", None), ("GET", "/fhir/metadata", None),
                               ("POST", "/fhir/Goal", minimal("Goal", ALICE))):
        assert_outcome(fhir.send(method, path, body, headers={"Accept": accept}), 406, code="not-supported")
    assert fhir.history_total("Goal") == before


@pytest.mark.parametrize("fmt, status", [("json", 200), ("application/fhir+json", 200), ("application/json", 200),
                                         ("xml", 406), ("application/fhir+xml", 406), ("ttl", 406), ("html", 406)])
def test_format_overrides_accept(open_service: Callable[..., Fhir], fmt: str, status: int) -> None:
    fhir = open_service("careplan")

    resp = fhir.get(f"/fhir/Goal?_format={fmt}", headers={"Accept": "application/xml"})

    assert resp.status_code == status, resp.get_data(as_text=True)
    if status == 406:
        assert_outcome(resp, 406, expression="_format")


# -- where a create that matched points ------------------------------------------------------------


def test_a_create_matching_on_the_natural_key_names_the_match(open_service: Callable[..., Fhir]) -> None:
    fhir = open_service("intake")
    first = fhir.post("/fhir/Patient", minimal("Patient", "dana"))

    again = fhir.post("/fhir/Patient", minimal("Patient", "dana"), headers={"Prefer": "return=minimal"})

    assert first.status_code == 201 and again.status_code == 200
    assert again.get_data() == b""
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["ETag"] == first.headers["ETag"] == 'W/"1"'
    assert fhir.history_total("Patient") == 1


def test_a_conditional_create_that_matches_names_the_match(open_service: Callable[..., Fhir]) -> None:
    fhir = open_service("careplan")
    goal = fhir.create(minimal("Goal", ALICE))

    again = fhir.post("/fhir/Goal", minimal("Goal", ALICE),
                      headers={"If-None-Exist": f"_id={goal['id']}", "Prefer": "return=minimal"})

    assert again.status_code == 200
    assert again.headers["Location"] == f"{fhir.base}/Goal/{goal['id']}/_history/1"
    assert again.headers["ETag"] == 'W/"1"'


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_a_bundle_entry_that_matches_names_the_match(open_service: Callable[..., Fhir], kind: str) -> None:
    fhir = open_service("intake")
    patient = fhir.create(minimal("Patient", "dana"))
    entry = {"resource": minimal("Patient", "dana"), "request": {"method": "POST", "url": "Patient"}}

    result = fhir.post("/fhir", {"resourceType": "Bundle", "type": kind, "entry": [entry]})

    assert result.status_code == 200, result.get_data(as_text=True)
    response = result.json["entry"][0]["response"]
    assert response["status"] == "200 OK"
    assert response["location"] == f"Patient/{patient['id']}/_history/1"
    assert response["etag"] == 'W/"1"'
    assert fhir.search("Patient", f"identifier={PARTNER_MRN}|MRN-dana")["total"] == 1


# -- tokens ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", [5, 1.5, True, {"system/*.cruds": 1}, ["system/*.cruds", 7]])
def test_a_signed_token_whose_scope_is_not_text_is_401(open_service: Callable[..., Fhir], scope: Any) -> None:
    fhir = open_service("careplan")
    claims = {"iss": "iop-suite", "aud": "iop-suite", "sub": "client", "exp": 4102444800, "scope": scope}
    token = jwt.encode(claims, TEST_SECRET, algorithm="HS256")

    resp = fhir.get("/fhir/Goal", headers={"Authorization": f"Bearer {token}"})

    assert_outcome(resp, 401, code="login")
    assert "WWW-Authenticate" in resp.headers


# -- a server error leaves a record an operator can find -------------------------------------------


def test_a_server_error_is_logged_with_an_incident_id_the_client_also_gets(open_service: Callable[..., Fhir]) -> None:
    fhir = open_service("careplan")
    secret = "Alex Rivera, born 1988-04-12"

    def broken() -> None:
        raise ValueError(secret)  # what a bug might quote from a request

    fhir.app.add_url_rule("/fhir/<rtype>/<rid>/$broken", "broken", lambda rtype, rid: broken(), methods=["POST"])
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    try:
        resp = fhir.post("/fhir/Goal/x/$broken", {"resourceType": "Parameters"})
    finally:
        logging.getLogger().removeHandler(handler)

    assert resp.status_code == 500
    [issue] = resp.json["issue"]
    errors = [json.loads(line) for line in lines.getvalue().splitlines() if '"level":"error"' in line]
    assert len(errors) == 1
    [record] = errors
    assert record["incident"] in issue["diagnostics"]
    assert resp.headers["X-Incident-Id"] == record["incident"]
    assert (record["route"], record["method"], record["error"]) == ("/fhir/<rtype>/<rid>/$broken", "POST", "ValueError")
    assert any("test_http_contract.py" in frame and "broken" in frame for frame in record["frames"])
    assert secret not in lines.getvalue()


# -- no redirects ---------------------------------------------------------------------------------

def test_a_trailing_slash_is_answered_and_an_empty_segment_is_not_found_never_redirected(
        open_service: Callable[..., Fhir]) -> None:
    fhir = open_service("careplan")
    created = fhir.create(minimal("Goal", ALICE))

    assert fhir.get("/fhir/Goal/").status_code == 200
    assert fhir.get(f"/fhir/Goal/{created['id']}/").json["id"] == created["id"]
    assert_outcome(fhir.get(f"/fhir//Goal/{created['id']}"), 404)
    assert_outcome(fhir.get("/fhir/Goal//"), 404)
