"""A SMART Backend Services client as a hospital's system would be one: its own key pairs, the JWKS it registers,
and client assertions signed with PyJWT and cryptography (nothing of the suite's own token code)."""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class BackendClient:
    client_id: str
    alg: str = "RS384"
    scopes: str = "system/*.rs"
    patient: str | None = None
    key: Any = field(default=None)
    kid: str = ""
    registers_alg: bool = True  # whether its JWK names its algorithm (RFC 7517 makes `alg` optional)

    def __post_init__(self) -> None:
        if self.key is None:
            self.key = rsa.generate_private_key(65537, 2048) if self.alg == "RS384" else \
                ec.generate_private_key(ec.SECP384R1())
        self.kid = self.kid or f"{self.client_id}-{self.alg.lower()}"

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[self.alg].to_jwk(self.key.public_key()))
        named = {"alg": self.alg} if self.registers_alg else {}
        return {"keys": [{**jwk, **named, "kid": self.kid, "use": "sig", "key_ops": ["verify"]}]}

    def registration(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"client_id": self.client_id, "jwks": self.jwks(), "scopes": self.scopes}
        return {**entry, "patient": self.patient} if self.patient else entry

    def assertion(self, audience: str, key: Any = None, alg: str | None = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.client_id, "sub": self.client_id, "aud": audience, "exp": now + 240,
                "iat": now, "jti": str(uuid.uuid4()), **claims}
        signer = self.key if key is None else key
        return jwt.encode({k: v for k, v in body.items() if v is not None}, signer, algorithm=alg or self.alg,
                          headers={"kid": self.kid})

    def form(self, assertion: str, scope: str = "system/*.rs") -> dict[str, str]:
        return {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion, "scope": scope}


def write_clients(path: Path, clients: list[BackendClient]) -> Path:
    path.write_text(json.dumps({"clients": [c.registration() for c in clients]}))
    return path


# The clients registered with the suite the end-to-end tests start (tests/support/processes.py).
SUITE_EHR = BackendClient("suite-ehr", "ES384", "system/*.rs")
SUITE_CLIENTS = [SUITE_EHR]
