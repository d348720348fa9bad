"""Which requested scopes a registered SMART Backend Services client is granted, and its registration file."""
from __future__ import annotations

import json

import pytest

from shared.smart import Client, covered, granted_scopes, load_clients


@pytest.mark.parametrize("requested, allowed, expected", [
    ("system/CarePlan.rs", "system/*.rs", True),
    ("system/CarePlan.rs", "system/CarePlan.r", False),
    ("system/CarePlan.read", "system/*.cruds", True),
    ("system/CarePlan.cruds", "system/*.read", False),
    ("system/Goal.s", "system/CarePlan.rs", False),
    ("patient/Goal.rs", "system/*.rs", False),
    ("system/*.rs", "system/Goal.rs", False),
    ("openid", "system/*.rs", False),
])
def test_a_requested_scope_is_granted_only_within_an_allowed_one(requested: str, allowed: str,
                                                                 expected: bool) -> None:
    assert covered(requested, allowed) is expected


def test_patient_scopes_are_granted_only_to_a_patient_bound_client() -> None:
    system = Client("a", None, ("system/*.rs", "patient/*.rs"))
    bound = Client("b", None, ("patient/*.rs",), patient="p-1")
    asked = "patient/Goal.rs system/Goal.rs system/Goal.rs user/Goal.rs"
    assert granted_scopes(asked, system) == ["system/Goal.rs"]
    assert granted_scopes(asked, bound) == ["patient/Goal.rs"]


@pytest.mark.parametrize("entry", [
    {"jwks": {"keys": []}, "scopes": "system/*.rs"},
    {"client_id": "x", "jwks": {"keys": []}, "scopes": "system/*.rs wide-open"},
    {"client_id": "x", "jwks": {"keys": []}, "scopes": "patient/*.rs", "patient": 7},
    {"client_id": "x", "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, "scopes": "system/*.rs"},
    {"client_id": "x", "jwks": {"keys": [{"kty": "RSA", "n": "AQAB"}]}, "scopes": "system/*.rs"},
    {"client_id": "x", "jwks": {"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "AQAB"}]},
     "scopes": "system/*.rs"},
    {"client_id": "x", "scopes": "system/*.rs"},
])
def test_a_malformed_client_registration_stops_the_service(tmp_path, entry: dict) -> None:
    path = tmp_path / "clients.json"
    path.write_text(json.dumps({"clients": [entry]}))
    with pytest.raises(ValueError):
        load_clients(path)


def test_the_suites_signing_key_is_made_once_or_read_from_its_pem(tmp_path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from shared.config import Settings
    from shared.smart import key_algorithm, public_jwk, signing_key, signing_key_path

    made = Settings("intake", var_dir=tmp_path)
    first = signing_key(made)
    assert key_algorithm(first) == "RS384" and signing_key_path(made).stat().st_mode & 0o077 == 0
    assert public_jwk(signing_key(made)) == public_jwk(first)  # the same key, not a new one
    for curve, expected in ((ec.SECP384R1(), "ES384"), (ec.SECP256R1(), None)):
        pem = tmp_path / f"{curve.name}.pem"
        pem.write_bytes(ec.generate_private_key(curve).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        key = signing_key(Settings("intake", var_dir=tmp_path, smart_signing_key=str(pem)))
        if expected:
            assert key_algorithm(key) == expected and "d" not in public_jwk(key)
        else:
            with pytest.raises(ValueError):
                key_algorithm(key)
