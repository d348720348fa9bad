"""SMART Backend Services (SMART App Launch 2.x): discovery and the client_credentials token endpoint.

`GET /.well-known/smart-configuration` is open. `POST /auth/token` takes a `client_credentials` grant whose client
authenticates with a `private_key_jwt` assertion (RS384 or ES384) signed by a key of the JWKS it registered
(IOP_SMART_CLIENTS). The assertion must name the client as iss and sub, the token endpoint as aud, expire at most
five minutes ahead, and carry a jti never presented before: each jti is recorded in the service's store, which all
its web processes share, so a replay to another replica is refused too. The answer is a short-lived access token
(IOP_SMART_TOKEN_TTL_S) signed by the suite's key (IOP_SMART_SIGNING_KEY) with the granted scopes: those asked
for that the client's registration allows. Every service accepts it like any other token (shared/auth.py).
Errors are RFC 6749 JSON that says what was wrong with the request, never which check an assertion failed.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask, Response, request

from shared.auth import SCOPE, V1
from shared.config import Settings
from shared.fhir.store import Store
from shared.logs import get_logger

log = get_logger("iop.smart")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS = ("RS384", "ES384")
MAX_ASSERTION_LIFETIME_S = 300
CAPABILITIES = ["client-confidential-asymmetric", "permission-v1", "permission-v2", "permission-patient"]
TOKEN_PATH = "/auth/token"
CONFIG_PATH = "/.well-known/smart-configuration"
JWKS_PATH = "/auth/jwks"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error answer."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


@dataclass(frozen=True)
class Client:
    client_id: str
    jwks: jwt.PyJWKSet
    scopes: tuple[str, ...]
    patient: str | None = None  # the one Patient a patient-bound client's tokens are confined to


def load_clients(path: str | Path) -> dict[str, Client]:
    """The registered clients of IOP_SMART_CLIENTS: a JSON list (or {"clients": [...]}) of objects with
    `client_id`, `jwks` (an inline JWK Set of public keys), `scopes` (a list or a space-separated string) and
    optionally `patient` (`Patient/id`). A malformed file stops the service at start-up, naming the entry."""
    raw = json.loads(Path(path).read_text())
    entries = raw.get("clients") if isinstance(raw, dict) else raw
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of clients")
    clients: dict[str, Client] = {}
    for i, entry in enumerate(entries):
        client_id = entry.get("client_id") if isinstance(entry, dict) else None
        if not isinstance(client_id, str) or not client_id:
            raise ValueError(f"{path}: client {i} has no client_id")
        scopes = entry.get("scopes", entry.get("scope", []))
        scopes = scopes.split() if isinstance(scopes, str) else scopes
        if not isinstance(scopes, list) or not all(isinstance(s, str) and SCOPE.match(s) for s in scopes):
            raise ValueError(f"{path}: client {client_id} has scopes that are not SMART scopes")
        patient = entry.get("patient")
        if patient is not None and not (isinstance(patient, str) and patient.removeprefix("Patient/")):
            raise ValueError(f"{path}: client {client_id} has a patient that is not Patient/id")
        jwks = entry.get("jwks")
        if not (isinstance(jwks, dict) and isinstance(jwks.get("keys"), list) and jwks["keys"] and all(
                isinstance(k, dict) and k.get("kty") in ("RSA", "EC") and "d" not in k for k in jwks["keys"])):
            raise ValueError(f"{path}: client {client_id} must register a JWKS of RSA or EC public keys")
        try:
            keys = jwt.PyJWKSet.from_dict(jwks)
        except (jwt.PyJWTError, KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: client {client_id} has no usable JWKS ({type(exc).__name__})") from None
        clients[client_id] = Client(client_id, keys, tuple(scopes), patient.removeprefix("Patient/") if patient
                                    else None)
    return clients


def signing_key_path(settings: Settings) -> Path:
    return Path(settings.smart_signing_key) if settings.smart_signing_key else \
        settings.var_dir / "auth" / "smart-signing-key.pem"


def signing_key(settings: Settings) -> Any:
    """The suite's private key for the access tokens it issues: IOP_SMART_SIGNING_KEY (a PEM file of an RSA or
    P-384 key), else one made once per checkout under var/auth/, readable only by its owner."""
    path = signing_key_path(settings)
    if not settings.smart_signing_key and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = rsa.generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        temp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        try:  # link is atomic: when several processes start at once, exactly one key is kept, and whole
            os.link(temp, path)
        except FileExistsError:
            pass
        finally:
            temp.unlink()
    return _private_key(path.read_bytes())


@lru_cache(maxsize=4)
def _private_key(pem: bytes) -> Any:
    """Loading checks an RSA key's arithmetic, tens of milliseconds: once per process and key."""
    return serialization.load_pem_private_key(pem, password=None)


def key_algorithm(key: Any) -> str:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RS384"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1":
        return "ES384"
    raise ValueError("IOP_SMART_SIGNING_KEY must be an RSA or P-384 private key")


def public_jwk(key: Any) -> dict[str, Any]:
    """The public half of the suite's key as a JWK, its `kid` the RFC 7638 thumbprint."""
    alg = key_algorithm(key)
    jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
    return {**jwk, "kid": _thumbprint(jwk), "alg": alg, "use": "sig"}


def _thumbprint(jwk: dict[str, Any]) -> str:
    members = {k: jwk[k] for k in (("e", "kty", "n") if jwk["kty"] == "RSA" else ("crv", "kty", "x", "y"))}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token_url(settings: Settings) -> str:
    """The token endpoint's URL, the audience a client assertion must name."""
    return settings.smart_token_url or settings.base_url.removesuffix("/fhir") + TOKEN_PATH


def covered(requested: str, allowed: str) -> bool:
    """Whether the allowed scope includes every interaction the requested one asks for."""
    want, have = SCOPE.match(requested), SCOPE.match(allowed)
    if want is None or have is None or want.group(1) != have.group(1):
        return False
    if have.group(2) not in ("*", want.group(2)):
        return False
    held = V1.get(have.group(3), have.group(3))
    return all(letter in held for letter in V1.get(want.group(3), want.group(3)))


def granted_scopes(asked: str, client: Client) -> list[str]:
    """The asked scopes the client may have: `system/` ones, and `patient/` ones for a patient-bound client."""
    contexts = ("system", "patient") if client.patient else ("system",)
    return list(dict.fromkeys(s for s in asked.split() if s.split("/", 1)[0] in contexts
                              and any(covered(s, allowed) for allowed in client.scopes)))


class TokenEndpoint:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings, self.store = settings, store
        self.clients = load_clients(settings.smart_clients) if settings.smart_clients else {}
        self.key = signing_key(settings)
        self.jwk = public_jwk(self.key)
        self.url = token_url(settings)

    def configuration(self) -> dict[str, Any]:
        return {"issuer": self.settings.smart_issuer, "token_endpoint": self.url,
                "jwks_uri": self.url.removesuffix(TOKEN_PATH) + JWKS_PATH,
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGS),
                "scopes_supported": ["system/*.cruds", "system/*.rs", "system/*.read", "system/*.write",
                                     "patient/*.cruds", "patient/*.rs", "patient/*.read"],
                "response_types_supported": ["token"], "capabilities": CAPABILITIES}

    def grant(self, form: dict[str, str]) -> dict[str, Any]:
        if form.get("grant_type") != "client_credentials":
            raise OAuthError("unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE or not form.get("client_assertion"):
            raise OAuthError("invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}, with a "
                                                "client_assertion")
        if not form.get("scope", "").strip():
            raise OAuthError("invalid_request", "scope is required")
        client = self.authenticate(form["client_assertion"], form.get("client_id"))
        scopes = granted_scopes(form["scope"], client)
        if not scopes:
            raise OAuthError("invalid_scope", "none of the requested scopes may be granted to this client")
        now, ttl = int(time.time()), self.settings.smart_token_ttl_s
        claims: dict[str, Any] = {"iss": self.settings.smart_issuer, "aud": self.settings.auth_audience,
                                  "sub": client.client_id, "client_id": client.client_id, "iat": now,
                                  "exp": now + ttl, "jti": str(uuid.uuid4()), "scope": " ".join(scopes)}
        if client.patient:
            claims["patient"] = client.patient
        token = jwt.encode(claims, self.key, algorithm=self.jwk["alg"], headers={"kid": self.jwk["kid"]})
        log.info("access token issued", client=client.client_id, scope=claims["scope"], ttl_s=ttl)
        answer = {"access_token": token, "token_type": "bearer", "expires_in": ttl, "scope": claims["scope"]}
        return {**answer, "patient": client.patient} if client.patient else answer

    def authenticate(self, assertion: str, claimed_id: str | None) -> Client:
        """The client a valid, fresh assertion authenticates; invalid_client (the same answer whatever failed)."""
        failed = OAuthError("invalid_client", "client authentication failed", 401)
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise failed from None
        alg, client_id = header.get("alg"), unverified.get("iss")
        client = self.clients.get(client_id) if isinstance(client_id, str) else None
        if alg not in ASSERTION_ALGS or client is None or claimed_id not in (None, client_id):
            log.info("client assertion refused", reason="algorithm or client", alg=str(alg)[:16])
            raise failed
        kid = header.get("kid")
        keys = [k for k in client.jwks.keys if (kid is None or k.key_id == kid) and k.key_type == (
                "RSA" if alg == "RS384" else "EC") and getattr(k, "_jwk_data", {}).get("alg") in (None, alg)]
        claims = None
        for key in keys:
            try:
                claims = jwt.decode(assertion, key.key, algorithms=[alg], audience=self.url, issuer=client_id,
                                    leeway=self.settings.auth_leeway_s,
                                    options={"require": ["iss", "sub", "aud", "exp", "jti"]})
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                log.info("client assertion refused", client=client_id, reason=type(exc).__name__)
                raise failed from None
        if claims is None:
            log.info("client assertion refused", client=client_id, reason="signature")
            raise failed
        exp, jti = claims["exp"], claims["jti"]
        if claims["sub"] != client_id or not isinstance(jti, str) or not jti or \
                exp > time.time() + MAX_ASSERTION_LIFETIME_S + self.settings.auth_leeway_s:
            log.info("client assertion refused", client=client_id, reason="sub, jti or exp")
            raise failed
        with self.store.transaction() as tx:  # seen once only, by any process sharing the store
            fresh = tx.mark_applied(f"smart-assertion:{client_id}", jti[:200])
        if not fresh:
            log.info("client assertion refused", client=client_id, reason="replayed jti")
            raise failed
        return client


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status, {**NO_STORE, **(headers or {})}, mimetype="application/json")


def install(app: Flask, settings: Settings, store: Store) -> TokenEndpoint:
    endpoint = TokenEndpoint(settings, store)

    @app.get(CONFIG_PATH)
    def smart_configuration() -> Response:
        return _json(200, endpoint.configuration(), {"Cache-Control": "max-age=300"})

    @app.get(JWKS_PATH)
    def suite_jwks() -> Response:
        return _json(200, {"keys": [endpoint.jwk]}, {"Cache-Control": "max-age=300"})

    @app.post(TOKEN_PATH)
    def token() -> Response:
        try:
            if request.mimetype != "application/x-www-form-urlencoded":
                raise OAuthError("invalid_request", "the request must be application/x-www-form-urlencoded")
            form = request.form
            if any(len(form.getlist(name)) > 1 for name in form):
                raise OAuthError("invalid_request", "a parameter was given more than once")
            return _json(200, endpoint.grant(form.to_dict()))
        except OAuthError as exc:
            return _json(exc.status, {"error": exc.error, "error_description": exc.description})

    return endpoint
