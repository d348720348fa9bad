"""Real tokens for tests: HS256 with the secret the test services are configured with."""
from __future__ import annotations

import requests

from shared.auth import mint

TEST_SECRET = "iop-suite-test-secret-not-for-production-0123456789"
ALL = "system/*.cruds"


def token(scopes: str = ALL, partner: str | None = None, subject: str = "test-client") -> str:
    return mint(TEST_SECRET, scopes, subject=subject, partner=partner)


def bearer(scopes: str = ALL, partner: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(scopes, partner)}"}


def session(scopes: str = ALL, partner: str | None = None) -> requests.Session:
    s = requests.Session()
    s.headers.update(bearer(scopes, partner))
    return s


http = session()  # a trusted system client with every scope, as an integration engine would hold
