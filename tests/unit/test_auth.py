"""Tokens and scopes without a server: verification by JWKS and by secret, SMART scope parsing."""
from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared.auth import Principal, TokenVerifier, mint, parse_scopes
from shared.fhir.outcome import FhirError

SECRET = "unit-test-secret-0123456789abcdef0123456789"


def claims(**over) -> dict:
    now = int(time.time())
    return {"iss": "iop-suite", "aud": "iop-suite", "sub": "ehr-1", "iat": now, "exp": now + 300,
            "scope": "system/CarePlan.rs", **over}


@pytest.mark.parametrize("scope, rtype, allowed, refused", [
    ("system/CarePlan.rs", "CarePlan", "rs", "cud"),
    ("user/*.cruds", "Encounter", "cruds", ""),
    ("patient/Goal.read", "Goal", "", "cruds"),  # no patient compartment is enforced: patient/ grants nothing
    ("patient/*.cruds user/Goal.rs", "Goal", "rs", "cud"),
    ("system/Encounter.write", "Encounter", "cud", "rs"),
    ("system/*.*", "Consent", "cruds", ""),
    ("openid launch system/Patient.r", "Patient", "r", "cuds"),
])
def test_smart_scopes_grant_exactly_their_interactions(scope: str, rtype: str, allowed: str, refused: str) -> None:
    principal = Principal("s", grants=parse_scopes(scope))
    assert all(principal.may(rtype, p) for p in allowed)
    assert not any(principal.may(rtype, p) for p in refused)
    assert not principal.may("Flag", "r") or "*" in scope


def test_a_token_with_patient_scopes_is_marked_so_its_refusal_can_say_why() -> None:
    verifier = TokenVerifier("iop-suite", "iop-suite", 5, hs256_secret=SECRET)
    principal = verifier.verify(f"Bearer {mint(SECRET, 'launch/patient patient/*.read')}")
    assert principal.patient_scopes and principal.grants == {}
    assert not verifier.verify(f"Bearer {mint(SECRET, 'system/*.read')}").patient_scopes


def test_an_hs256_token_is_verified_with_issuer_audience_and_expiry() -> None:
    verifier = TokenVerifier("iop-suite", "iop-suite", 5, hs256_secret=SECRET)
    principal = verifier.verify(f"Bearer {mint(SECRET, 'system/CarePlan.rs', subject='ehr-1', partner='p9')}")
    assert principal.subject == "ehr-1" and principal.partner == "p9" and principal.may("CarePlan", "s")


@pytest.mark.parametrize("token_claims, secret", [
    (claims(exp=int(time.time()) - 120), SECRET),
    (claims(aud="someone-else"), SECRET),
    (claims(iss="https://evil.example"), SECRET),
    ({k: v for k, v in claims().items() if k != "exp"}, SECRET),
    (claims(), "a-different-secret-0123456789abcdef012345"),
])
def test_a_bad_token_is_refused_with_401(token_claims: dict, secret: str) -> None:
    verifier = TokenVerifier("iop-suite", "iop-suite", 5, hs256_secret=SECRET)
    with pytest.raises(FhirError) as refused:
        verifier.verify("Bearer " + jwt.encode(token_claims, secret, algorithm="HS256"))
    assert refused.value.status == 401 and "Bearer" in refused.value.headers["WWW-Authenticate"]


def test_no_token_and_alg_none_are_refused() -> None:
    verifier = TokenVerifier("iop-suite", "iop-suite", 5, hs256_secret=SECRET)
    for header in (None, "Basic abc", "Bearer " + jwt.encode(claims(), None, algorithm="none")):
        with pytest.raises(FhirError) as refused:
            verifier.verify(header)
        assert refused.value.status == 401


@pytest.mark.parametrize("algorithm, key", [("RS256", rsa.generate_private_key(65537, 2048)),
                                            ("ES256", ec.generate_private_key(ec.SECP256R1()))])
def test_asymmetric_tokens_are_verified_against_a_jwks_file(tmp_path, algorithm: str, key) -> None:
    jwk = json.loads(jwt.algorithms.get_default_algorithms()[algorithm].to_jwk(key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": algorithm}]}))
    verifier = TokenVerifier("iop-suite", "iop-suite", 5, jwks=str(jwks))
    token = jwt.encode(claims(), key, algorithm=algorithm, headers={"kid": "k1"})
    assert verifier.verify(f"Bearer {token}").subject == "ehr-1"
    with pytest.raises(FhirError):  # no shared secret configured: HS256 is not accepted
        verifier.verify("Bearer " + jwt.encode(claims(), SECRET, algorithm="HS256"))


@pytest.mark.parametrize("scheme", ["bearer ", "BEARER ", "Bearer   ", "bEaReR\t", "Bearer \t "])
def test_the_bearer_scheme_is_case_insensitive_and_any_whitespace_may_follow_it(scheme: str) -> None:
    verifier = TokenVerifier("iop-suite", "iop-suite", 5, hs256_secret=SECRET)
    assert verifier.verify(scheme + mint(SECRET, "system/CarePlan.rs", subject="ehr-1")).subject == "ehr-1"


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearerx.y.z", "Token abc", "Bearer a b"])
def test_an_authorization_header_without_one_bearer_token_is_refused_with_401(header: str) -> None:
    verifier = TokenVerifier("iop-suite", "iop-suite", 5, hs256_secret=SECRET)
    with pytest.raises(FhirError) as refused:
        verifier.verify(header)
    assert refused.value.status == 401


@pytest.mark.parametrize("malformed", [
    {"scope": 42}, {"scope": 4.2}, {"scope": True}, {"scope": ["system/*.read", 7]}, {"scope": [1, 2]},
    {"scope": {"system/*": "read"}}, {"scope": [["system/*.read"]]}, {"scp": 42}, {"scope": None, "scp": {"a": 1}},
    {"partner": 7}, {"partner": ["alpha"]}, {"partner": ""}, {"organization": {"reference": "Organization/x"}},
])
def test_a_signed_token_with_a_malformed_claim_is_refused_with_401_not_read_as_wider(malformed: dict) -> None:
    """A correctly signed token whose scope, partner or organization claim has the wrong shape is invalid: it is
    neither a server error nor a token without the confinement it tried to state."""
    verifier = TokenVerifier("iop-suite", "iop-suite", 5, hs256_secret=SECRET)
    token_claims = claims(**malformed)
    if "scp" in malformed and "scope" not in malformed:
        del token_claims["scope"]  # scp is read only without a scope claim
    token = jwt.encode(token_claims, SECRET, algorithm="HS256")
    with pytest.raises(FhirError) as refused:
        verifier.verify(f"Bearer {token}")
    assert refused.value.status == 401 and "Bearer" in refused.value.headers["WWW-Authenticate"]


@pytest.mark.parametrize("scope, grants", [
    ("", {}), ([], {}), (["system/CarePlan.rs", "system/Goal.r"], {"CarePlan": "rs", "Goal": "r"}),
])
def test_a_scope_claim_may_be_a_string_or_a_list_of_strings(scope, grants: dict) -> None:
    verifier = TokenVerifier("iop-suite", "iop-suite", 5, hs256_secret=SECRET)
    assert verifier.verify("Bearer " + jwt.encode(claims(scope=scope), SECRET, algorithm="HS256")).grants == grants


def test_a_patient_claim_binds_the_token_and_lets_its_patient_scopes_grant() -> None:
    verifier = TokenVerifier("iop-suite", "iop-suite", 5, hs256_secret=SECRET)
    principal = verifier.verify(f"Bearer {mint(SECRET, 'launch/patient patient/*.rs', patient='Patient/p-1')}")
    assert principal.patient == "p-1" and principal.may("CarePlan", "r") and principal.may("Goal", "s")
    assert not principal.may("CarePlan", "c")
    bare = verifier.verify("Bearer " + jwt.encode(claims(scope="patient/Goal.read", patient="p-2"), SECRET,
                                                  algorithm="HS256"))
    assert bare.patient == "p-2" and bare.grants == {"Goal": "rs"}


@pytest.mark.parametrize("patient", [7, "", "Patient/", "Patient/a b", ["p-1"], "x" * 65, "Group/1/../p"])
def test_a_malformed_patient_claim_makes_the_token_invalid(patient) -> None:
    verifier = TokenVerifier("iop-suite", "iop-suite", 5, hs256_secret=SECRET)
    token = jwt.encode(claims(scope="patient/*.rs", patient=patient), SECRET, algorithm="HS256")
    with pytest.raises(FhirError) as refused:
        verifier.verify(f"Bearer {token}")
    assert refused.value.status == 401


def test_a_token_is_not_both_a_partners_and_a_patients() -> None:
    verifier = TokenVerifier("iop-suite", "iop-suite", 5, hs256_secret=SECRET)
    with pytest.raises(FhirError):
        verifier.verify(f"Bearer {mint(SECRET, 'patient/*.rs', partner='p9', patient='p-1')}")


def test_tokens_of_the_suites_own_token_endpoint_are_verified_with_its_key() -> None:
    key = rsa.generate_private_key(65537, 2048)
    verifier = TokenVerifier("iop-suite", "iop-suite", 5, hs256_secret=SECRET,
                             own=("iop-suite-smart", "RS384", key.public_key()))
    issued = jwt.encode(claims(iss="iop-suite-smart", client_id="ehr-9"), key, algorithm="RS384")
    assert verifier.verify(f"Bearer {issued}").client_id == "ehr-9"
    for bad in (jwt.encode(claims(iss="iop-suite-smart"), rsa.generate_private_key(65537, 2048), algorithm="RS384"),
                jwt.encode(claims(), key, algorithm="RS384")):  # another key; the suite's key, another issuer
        with pytest.raises(FhirError) as refused:
            verifier.verify(f"Bearer {bad}")
        assert refused.value.status == 401
