"""Whether the caller's SMART scopes allow an interaction on a type that a request reaches indirectly: a chained
or `_has` target, an included resource, a type of `$everything` or `$export`. The request's own type and
interaction are checked before it runs (shared/access.py); these are checked where they are reached."""
from __future__ import annotations

from shared.auth import current_principal, forbidden
from shared.fhir.outcome import FhirError


def granted(rtype: str, permission: str) -> bool:
    """Whether the current caller may; a call from inside the service (no caller) may."""
    principal = current_principal.get()
    return principal is None or principal.may(rtype, permission)


def require(rtype: str, permission: str, why: str) -> None:
    if not granted(rtype, permission):
        raise refused_scope(rtype, permission, why)


def refused_scope(rtype: str, permission: str, why: str) -> FhirError:
    return forbidden(f"the token's scopes do not allow '{permission}' on {rtype}, which {why} reaches")
