"""Bearer JWTs and SMART scopes on every FHIR endpoint.

Tokens are verified with PyJWT: RS256/ES256 against a JWKS (file or URL, IOP_AUTH_JWKS), or
HS256 with a shared secret for development (IOP_AUTH_HS256_SECRET, else a random secret kept
under var/auth/ that `iop token` reads too). Issuer, audience and expiry are always checked.
SMART v2 scopes (`system/CarePlan.rs`, `user/*.cruds`) and v1 (`.read`, `.write`, `.*`) are
understood. `patient/` scopes grant only to a token bound to one Patient by its `patient` claim (the
SMART launch context), which confines the whole token to that patient's compartment (shared/fhir/patients.py);
without one they grant nothing. A `partner` claim confines a referral partner to its own submissions; an
`organization` claim binds the EHR Subscriptions a client writes to its own organisation. Access tokens issued by
the suite's own SMART token endpoint (shared/smart.py) are verified with the suite's public key.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.fhir.outcome import FhirError, Issue

SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.(\*|read|write|c?r?u?d?s?)$")
BEARER = re.compile(r"bearer[ \t]+(\S+)[ \t]*", re.IGNORECASE)  # RFC 7235: the scheme is case-insensitive
V1 = {"read": "rs", "write": "cud", "*": "cruds"}
PATIENT_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # a FHIR id
ASYMMETRIC = ["RS256", "ES256"]


@dataclass(frozen=True)
class Principal:
    """Who is calling, and what their token lets them do."""

    subject: str
    client_id: str | None = None
    partner: str | None = None
    grants: dict[str, str] = field(default_factory=dict)  # resource type or "*" -> permission letters
    organization: str | None = None  # the client's own organisation: "Organization/x" or "system|value"
    patient_scopes: bool = False  # the token asked for patient/ scopes, which grant nothing without a patient
    patient: str | None = None  # the one Patient (id) whose compartment alone the token may reach

    def may(self, rtype: str, permission: str) -> bool:
        held = self.grants.get(rtype, "") + self.grants.get("*", "")
        return permission in held

    @property
    def who(self) -> str:
        return self.client_id or self.subject


current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)


def parse_scopes(scope: str | list[str], patient_bound: bool = False) -> dict[str, str]:
    """Permission letters by resource type, from `system/` and `user/` scopes, and from `patient/` scopes when
    the token is bound to one patient (whose compartment then confines all it may do).

    Without a patient, `patient/` scopes grant nothing rather than be read as wider than they are.
    """
    grants: dict[str, str] = {}
    for item in scope.split() if isinstance(scope, str) else scope:
        found = SCOPE.match(item)
        if not found or (found.group(1) == "patient" and not patient_bound):
            continue  # openid, launch, offline_access ... say nothing about FHIR data
        _, rtype, perm = found.groups()
        grants[rtype] = grants.get(rtype, "") + V1.get(perm, perm)
    return grants


def has_patient_scopes(scope: str | list[str]) -> bool:
    return any(item.startswith("patient/") for item in (scope.split() if isinstance(scope, str) else scope))


def dev_secret_path(var_dir: Path) -> Path:
    return var_dir / "auth" / "dev-hs256.secret"


def dev_secret(var_dir: Path) -> str:
    """The development HS256 secret: made once per checkout, readable only by its owner."""
    path = dev_secret_path(var_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # O_EXCL: when several processes start at once, exactly one writes the secret
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
    for _ in range(50):  # the writer may not have finished
        value = path.read_text().strip()
        if value:
            return value
        time.sleep(0.02)
    raise RuntimeError(f"the development secret {path} is empty")


def unauthorized(message: str) -> FhirError:
    return FhirError(401, [Issue(message, code="login")],
                     {"WWW-Authenticate": f'Bearer realm="iop-suite", error="invalid_token", '
                                          f'error_description="{message}"'})


def forbidden(message: str) -> FhirError:
    return FhirError(403, [Issue(message, code="forbidden")])


def _jwt() -> Any:
    """PyJWT, imported when a token is first verified or made: with `cryptography` it is some MiB that a
    worker process, which handles no request, never needs."""
    import jwt

    return jwt


class TokenVerifier:
    def __init__(self, issuer: str, audience: str, leeway_s: int, hs256_secret: str | None = None,
                 jwks: str | None = None, own: tuple[str, str, Any] | None = None) -> None:
        """`own`: (issuer, algorithm, public key) of the access tokens the suite's token endpoint issues."""
        self.issuer, self.audience, self.leeway = issuer, audience, leeway_s
        self.own = own
        self.secret = hs256_secret
        self._jwks_client = _jwt().PyJWKClient(jwks) if jwks and jwks.startswith(("http://", "https://")) else None
        self._jwks_file = _jwt().PyJWKSet.from_dict(json.loads(Path(jwks).read_text())) if jwks and not \
            self._jwks_client else None

    def _key(self, token: str, alg: str) -> Any:
        if alg == "HS256":
            if not self.secret:
                raise unauthorized("HS256 tokens are not accepted here")
            return self.secret
        if alg not in ASYMMETRIC:
            raise unauthorized(f"algorithm {alg} is not accepted")
        if self._jwks_client is not None:
            return self._jwks_client.get_signing_key_from_jwt(token).key
        if self._jwks_file is not None:
            kid = _jwt().get_unverified_header(token).get("kid")
            keys = [k for k in self._jwks_file.keys if kid is None or k.key_id == kid]
            if keys:
                return keys[0].key
        raise unauthorized("no key to verify this token")

    def verify(self, header: str | None) -> Principal:
        found = BEARER.fullmatch(header.strip()) if header else None
        if found is None:
            raise unauthorized("a Bearer token is required")
        token = found.group(1)
        try:
            alg = _jwt().get_unverified_header(token).get("alg", "")
            issuer, key = self.issuer, None
            if self.own is not None and alg == self.own[1]:  # issued by the suite's token endpoint
                issuer, key = self.own[0], self.own[2]
            claims = _jwt().decode(token, key or self._key(token, alg), algorithms=[alg], audience=self.audience,
                                issuer=issuer, leeway=self.leeway,
                                options={"require": ["exp", "iss", "aud", "sub"]})
        except _jwt().PyJWTError as exc:
            raise unauthorized(f"the token is not valid: {type(exc).__name__}") from None
        except _jwt().exceptions.PyJWKClientError:
            raise unauthorized("the token's signing key could not be found") from None
        return principal_of(claims)


def principal_of(claims: dict[str, Any]) -> Principal:
    """The caller a verified token names. A claim of the wrong shape makes the token invalid: a confining claim
    (partner, organization) that could not be read must not leave the token unconfined."""
    scope = claims.get("scope", claims.get("scp", ""))
    if not (isinstance(scope, str) or isinstance(scope, list) and all(isinstance(s, str) for s in scope)):
        raise unauthorized("the token's scope claim must be a string of space-separated scopes")
    partner, organization, patient = (_confining(claims, name) for name in ("partner", "organization", "patient"))
    if patient is not None:
        patient = patient.removeprefix("Patient/")
        if not PATIENT_ID.fullmatch(patient):
            raise unauthorized("the token's patient claim must be a Patient id or Patient/id")
        if partner is not None:
            raise unauthorized("a token may not be both a referral partner's and bound to a patient")
    client = next((c for c in (claims.get("client_id"), claims.get("azp")) if isinstance(c, str) and c), None)
    return Principal(claims["sub"], client, partner, parse_scopes(scope, patient is not None), organization,
                     has_patient_scopes(scope), patient)


def _confining(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is not None and not (isinstance(value, str) and value):
        raise unauthorized(f"the token's {name} claim must be a non-empty string")
    return value


def mint(secret: str, scopes: str, issuer: str = "iop-suite", audience: str = "iop-suite", subject: str = "dev",
         partner: str | None = None, ttl_s: int = 3600, client_id: str | None = None,
         organization: str | None = None, patient: str | None = None) -> str:
    """A development HS256 token (for `iop token` and tests)."""
    now = int(time.time())
    claims: dict[str, Any] = {"iss": issuer, "aud": audience, "sub": subject, "iat": now, "exp": now + ttl_s,
                              "scope": scopes}
    if partner:
        claims["partner"] = partner
    if client_id:
        claims["client_id"] = client_id
    if organization:
        claims["organization"] = organization
    if patient:
        claims["patient"] = patient.removeprefix("Patient/")
    return _jwt().encode(claims, secret, algorithm="HS256")
