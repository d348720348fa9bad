"""SMART Backend Services against a service's real app and store: discovery, the client_credentials grant with a
private_key_jwt assertion that a client signs with PyJWT, and every way an assertion can be wrong."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.integration.test_fhir_conformance import Fhir
from tests.support.smart import BackendClient, write_clients

EHR = BackendClient("ehr-rs", "RS384", "system/Patient.rs system/Observation.r", registers_alg=False)
EC_CLIENT = BackendClient("ehr-es", "ES384", "system/*.read")
TTL = 120


@pytest.fixture
def intake(open_service: Callable[..., Fhir], tmp_path: Path) -> Fhir:
    clients = write_clients(tmp_path / "clients.json", [EHR, EC_CLIENT])
    return open_service("intake", smart_clients=str(clients), var_dir=tmp_path, smart_token_ttl_s=TTL,
                        database=str(tmp_path / "intake.db"))


def token_url(fhir: Fhir) -> str:
    return fhir.base.removesuffix("/fhir") + "/auth/token"


def ask(fhir: Fhir, form: dict[str, str]):
    return fhir.client.post("/auth/token", data=form, environ_base={"HTTP_AUTHORIZATION": ""})


def test_the_smart_configuration_is_open_and_names_the_token_endpoint(intake: Fhir) -> None:
    resp = intake.client.get("/.well-known/smart-configuration", environ_base={"HTTP_AUTHORIZATION": ""})
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    config = resp.get_json()
    assert config["token_endpoint"] == token_url(intake)
    assert config["grant_types_supported"] == ["client_credentials"]
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert config["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert "system/*.rs" in config["scopes_supported"] and "patient/*.rs" in config["scopes_supported"]
    assert {"client-confidential-asymmetric", "permission-v2", "permission-patient"} <= set(config["capabilities"])
    keys = intake.client.get("/auth/jwks").get_json()["keys"]
    assert [k["alg"] for k in keys] == ["RS384"] and "d" not in keys[0]  # the public key only


@pytest.mark.parametrize("client", [EHR, EC_CLIENT], ids=lambda c: c.alg)
def test_a_signed_assertion_gets_a_short_lived_token_that_reads_fhir(intake: Fhir, client: BackendClient) -> None:
    created = intake.post("/fhir/Patient", {"resourceType": "Patient", "name": [{"family": "Okafor"}]})
    assert created.status_code == 201
    scope = "system/Patient.rs" if client is EHR else "system/Patient.read"
    resp = ask(intake, client.form(client.assertion(token_url(intake)), scope))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["token_type"] == "bearer" and body["expires_in"] == TTL and body["scope"] == scope
    assert resp.headers["Cache-Control"] == "no-store"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == client.client_id and claims["exp"] - claims["iat"] == TTL
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    read = intake.get(f"/fhir/Patient/{created.get_json()['id']}", headers=auth)
    assert read.status_code == 200 and read.get_json()["name"][0]["family"] == "Okafor"
    assert intake.get("/fhir/Patient?_count=1", headers=auth).status_code == 200
    refused = intake.post("/fhir/Patient", {"resourceType": "Patient"}, headers=auth)  # no write scope granted
    assert refused.status_code == 403 and refused.get_json()["resourceType"] == "OperationOutcome"


def test_only_the_asked_scopes_the_client_may_have_are_granted(intake: Fhir) -> None:
    asked = "system/Patient.rs system/Observation.rs system/Flag.rs patient/*.rs user/*.cruds openid"
    body = ask(intake, EHR.form(EHR.assertion(token_url(intake)), asked)).get_json()
    assert body["scope"] == "system/Patient.rs"  # Observation.s, Flag, patient/ and user/ are not EHR's to have
    resp = ask(intake, EHR.form(EHR.assertion(token_url(intake)), "system/Flag.rs system/Patient.cud"))
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_scope"


def forged(client: BackendClient, aud: str) -> str:
    other = rsa.generate_private_key(65537, 2048) if client.alg == "RS384" else ec.generate_private_key(
        ec.SECP384R1())
    return client.assertion(aud, key=other)


@pytest.mark.parametrize("wrong", [
    "forged", "expired", "too-long-lived", "wrong-aud", "unknown-client", "sub-not-iss", "no-jti", "alg-none",
    "hs256", "rs256", "not-a-jwt", "client-id-mismatch",
])
def test_a_bad_assertion_is_invalid_client_and_says_nothing_more(intake: Fhir, wrong: str) -> None:
    aud, now = token_url(intake), int(time.time())
    assertion = {
        "forged": lambda: forged(EHR, aud),
        "expired": lambda: EHR.assertion(aud, exp=now - 120, iat=now - 400),
        "too-long-lived": lambda: EHR.assertion(aud, exp=now + 3600),
        "wrong-aud": lambda: EHR.assertion("https://elsewhere.example/auth/token"),
        "unknown-client": lambda: BackendClient("stranger").assertion(aud),
        "sub-not-iss": lambda: EHR.assertion(aud, sub="ehr-es"),
        "no-jti": lambda: EHR.assertion(aud, jti=None),
        "alg-none": lambda: jwt.encode({"iss": EHR.client_id, "sub": EHR.client_id, "aud": aud, "exp": now + 60,
                                        "jti": "j-none"}, None, algorithm="none"),
        "hs256": lambda: EHR.assertion(aud, key="a-shared-secret-anyone-could-guess-0123456789", alg="HS256"),
        "rs256": lambda: EHR.assertion(aud, alg="RS256"),
        "not-a-jwt": lambda: "not.a.jwt",
        "client-id-mismatch": lambda: EHR.assertion(aud),
    }[wrong]()
    form = EHR.form(assertion, "system/Patient.rs")
    if wrong == "client-id-mismatch":
        form["client_id"] = EC_CLIENT.client_id
    resp = ask(intake, form)
    assert resp.status_code == 401
    assert resp.get_json() == {"error": "invalid_client", "error_description": "client authentication failed"}
    assert "access_token" not in resp.get_data(as_text=True)


def test_a_replayed_assertion_is_refused_by_every_process_sharing_the_store(
        open_service: Callable[..., Fhir], intake: Fhir, tmp_path: Path) -> None:
    replica = open_service("intake", smart_clients=str(tmp_path / "clients.json"), var_dir=tmp_path,
                           database=str(tmp_path / "intake.db"))
    assertion = EHR.assertion(token_url(intake))
    assert ask(intake, EHR.form(assertion, "system/Patient.rs")).status_code == 200
    for server in (intake, replica):
        resp = ask(server, EHR.form(assertion, "system/Patient.rs"))
        assert resp.status_code == 401 and resp.get_json()["error"] == "invalid_client"


@pytest.mark.parametrize("form, error", [
    ({"grant_type": "authorization_code"}, "unsupported_grant_type"),
    ({"client_assertion_type": "urn:example:password"}, "invalid_request"),
    ({"client_assertion": ""}, "invalid_request"),
    ({"scope": " "}, "invalid_request"),
])
def test_a_malformed_token_request_is_an_oauth_error(intake: Fhir, form: dict, error: str) -> None:
    resp = ask(intake, {**EHR.form(EHR.assertion(token_url(intake))), **form})
    assert resp.status_code == 400 and resp.get_json()["error"] == error


def test_a_token_request_must_be_a_form(intake: Fhir) -> None:
    resp = intake.client.post("/auth/token", json=EHR.form(EHR.assertion(token_url(intake))))
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_request"


def test_a_bad_or_tampered_access_token_gets_401_operation_outcome(intake: Fhir) -> None:
    body = ask(intake, EHR.form(EHR.assertion(token_url(intake)), "system/Patient.rs")).get_json()
    head, claims, sig = body["access_token"].split(".")
    tampered = jwt.utils.base64url_encode(jwt.utils.base64url_decode(claims).replace(
        b"system/Patient.rs", b"system/*.cruds....")).decode()
    for bad in (f"{head}.{tampered}.{sig}", "garbage", forged(EHR, "iop-suite")):
        resp = intake.get("/fhir/Patient", headers={"Authorization": f"Bearer {bad}"})
        assert resp.status_code == 401 and resp.get_json()["resourceType"] == "OperationOutcome"
        assert "WWW-Authenticate" in resp.headers


def test_the_capability_statement_names_the_token_endpoint(intake: Fhir) -> None:
    security = intake.get("/fhir/metadata").get_json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = next(e for e in security["extension"] if e["url"].endswith("/oauth-uris"))
    assert {"url": "token", "valueUri": token_url(intake)} in uris["extension"]


def test_a_patient_bound_client_gets_a_token_confined_to_its_patient(open_service: Callable[..., Fhir],
                                                                     tmp_path: Path) -> None:
    app_client = BackendClient("patient-app", "ES384", "patient/*.rs", patient="Patient/pat-1")
    clients = write_clients(tmp_path / "patient-clients.json", [app_client])
    intake = open_service("intake", smart_clients=str(clients), var_dir=tmp_path,
                          database=str(tmp_path / "intake-patients.db"))
    for rid in ("pat-1", "pat-2"):
        assert intake.put(f"/fhir/Patient/{rid}", {"resourceType": "Patient", "id": rid}).status_code == 201
    resp = ask(intake, app_client.form(app_client.assertion(token_url(intake)),
                                       "patient/Patient.rs system/Patient.rs"))
    body = resp.get_json()
    assert resp.status_code == 200 and body["scope"] == "patient/Patient.rs" and body["patient"] == "pat-1"
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    assert [e["resource"]["id"] for e in intake.get("/fhir/Patient", headers=auth).get_json()["entry"]] == ["pat-1"]
    assert intake.get("/fhir/Patient/pat-2", headers=auth).status_code == 404
