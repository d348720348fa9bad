"""Per request: who is calling (Bearer JWT), whether their SMART scopes allow it, and the audit trail."""
from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, request

from shared.auth import Principal, TokenVerifier, current_principal, dev_secret, forbidden
from shared.config import Settings
from shared.fhir import patients
from shared.fhir.bundle_rules import bundle_shape
from shared.fhir.interactions import FhirApi
from shared.fhir.interactions import Response as ApiResponse
from shared.fhir.outcome import FhirError
from shared.fhir.partners import tag_partner
from shared.fhir.registry import Operation, Registry
from shared.fhir.store import Transaction
from shared.fhir.util import now_instant, ref_id
from shared.fhir.validation import parse_json
from shared.logs import get_logger

log = get_logger("iop.access")
INSTANCE = {"GET": "r", "PUT": "u", "PATCH": "u", "DELETE": "d"}
AUDIT_ACTION = {"c": "C", "r": "R", "s": "R", "u": "U", "d": "D"}
EXEMPT = {"/fhir/metadata"}
EXPORT_FILES = "/fhir/_export/"


def verifier_for(settings: Settings, own: tuple[str, str, Any] | None = None) -> TokenVerifier:
    """`own`: the issuer, algorithm and public key of the tokens the suite's SMART token endpoint issues."""
    secret = settings.auth_hs256_secret or (None if settings.auth_jwks else dev_secret(settings.var_dir))
    return TokenVerifier(settings.auth_issuer, settings.auth_audience, settings.auth_leeway_s, secret,
                         settings.auth_jwks or None, own)


def operation_of(registry: Registry, rule: str, args: dict[str, Any]) -> tuple[str, Operation | None] | None:
    """The operation a request calls: its name and what is registered under it; None for other interactions."""
    rtype, rid = args.get("rtype", ""), args.get("rid", "")
    if not (rtype.startswith("$") or rid.startswith("$") or rule.endswith("/<op>")):
        return None
    name = (args.get("op") or rid or rtype).lstrip("$")
    return name, registry.operations.get((None if rtype.startswith("$") else rtype, bool(args.get("op")), name))


def needed(api: FhirApi, rule: str, method: str, args: dict[str, Any]) -> list[tuple[str, str]]:
    """The (resource type, SMART permission) pairs a request needs; bundles are checked per entry."""
    rtype = args.get("rtype", "")
    if rule == "/fhir" or rule == "/fhir/":
        return []  # per entry, in bundle_needs
    if rule == "/fhir/_history":
        return [("*", "r")]
    if rule.startswith(EXPORT_FILES):
        return []  # a Bulk Data job's status and files are its own client's alone (shared/fhir/bulk.py)
    if (called := operation_of(api.registry, rule, args)) is not None:
        op = called[1]
        return [(rtype if not rtype.startswith("$") else "*", op.needs if op else "r")]
    if rule.endswith("/_search"):
        return [(rtype, "s")]
    if rule.endswith(("/_history", "/_history/<vid>", "/$validate")):
        return [(rtype, "r")]
    if rule == "/fhir/<rtype>":  # PUT and DELETE with search criteria are conditional update and delete
        return [(rtype, {"GET": "s", "PUT": "u", "DELETE": "d"}.get(method, "c"))]
    return [(rtype, INSTANCE.get(method, "r"))]


def bundle_needs(bundle: dict) -> list[tuple[str, str]]:
    out = []
    for entry in bundle.get("entry", []) or []:
        req = entry.get("request") or {}
        rtype = ((req.get("url") or "").split("?")[0].strip("/").split("/") or [""])[0]
        method = req.get("method", "GET")
        single = "/" in (req.get("url") or "").split("?")[0].strip("/")
        out.append((rtype, {"POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}.get(method, "r" if single else "s")))
    return out


def authorize(principal: Principal, pairs: list[tuple[str, str]]) -> None:
    for rtype, permission in pairs:
        if not principal.may(rtype, permission):
            hint = (" (patient/ scopes grant only to a token bound to one patient by a patient claim)"
                    if principal.patient_scopes and principal.patient is None else "")
            raise forbidden(f"the token's scopes do not allow '{permission}' on {rtype}{hint}")


def install(app: Flask, settings: Settings, api: FhirApi, own: tuple[str, str, Any] | None = None
            ) -> Callable[[Transaction, ApiResponse], None]:
    """Authentication, scopes and the audit trail of `app`; returns what records a write's AuditEvent in the
    write's own transaction (FhirEndpoints' `audit`). Anything not recorded that way (reads, refusals, errors,
    operations) is recorded after the response, in a transaction of its own."""
    verifier = verifier_for(settings, own)
    open_paths = {p.strip() for p in settings.auth_open_paths.split(",") if p.strip()}

    @app.before_request
    def authenticate() -> None:
        if request.path in open_paths or request.path in EXEMPT or not request.path.startswith("/fhir"):
            return
        principal = verifier.verify(request.headers.get("Authorization"))
        g.principal = principal
        g.principal_token = current_principal.set(principal)
        if request.url_rule is not None:
            g.needed = needed(api, request.url_rule.rule, request.method, request.view_args or {})
            if request.url_rule.rule in ("/fhir", "/fhir/") and request.method == "POST":
                body = parse_json(request.get_data(cache=True))
                g.needed = bundle_needs(bundle_shape(body)) if body.get("resourceType") == "Bundle" else []
            authorize(principal, g.needed)
            called = operation_of(api.registry, request.url_rule.rule, request.view_args or {})
            patients.check_request(api.registry.types, g.needed, called[0] if called else None)
            if principal.partner:
                api.registry.check_partner(g.needed, operation_of(api.registry, request.url_rule.rule,
                                                                  request.view_args or {}))

    @app.teardown_request
    def forget(_: BaseException | None) -> None:
        token = g.pop("principal_token", None)
        if token is not None:
            current_principal.reset(token)

    def audited() -> bool:
        return g.get("principal") is not None and request.url_rule is not None and "AuditEvent" not in request.path

    def within(tx: Transaction, answer: ApiResponse) -> None:
        if audited() and not g.get("audited"):
            body = answer.body if isinstance(answer.body, dict) else None
            pairs = g.get("needed") or [("Bundle", "c")]
            write_audit(api, tx, audit_event(api, g.principal, answer.status, body, pairs))
            g.audited = True  # a failure after this rolls the record back with the write: after_request records it

    @app.after_request
    def audit(resp: Response) -> Response:
        if audited() and not (g.get("audited") and resp.status_code < 400):
            try:
                body = resp.get_json(silent=True) if resp.mimetype.endswith("json") else None
                with api.store.transaction() as tx:
                    write_audit(api, tx, audit_event(api, g.principal, resp.status_code, body,
                                                     g.get("needed") or [("Bundle", "c")]))
            except FhirError:
                log.error("audit event could not be stored", route=request.url_rule.rule)
        return resp

    return within


def _patient_in(resource: dict) -> str | None:
    if resource.get("resourceType") == "Patient":
        return resource.get("id")
    for key in ("subject", "patient", "for"):
        value = resource.get(key)
        if isinstance(value, dict) and str(value.get("reference", "")).startswith("Patient/"):
            return ref_id(value)
    return None


def _patients_of(body: Any) -> list[str]:
    """The patients a request concerned: the search's patient parameter, the resource answered, or the
    resources of a transaction or batch."""
    for name in ("patient", "subject"):
        if request.args.get(name):
            return [request.args[name].rsplit("/", 1)[-1]]
    if not isinstance(body, dict):
        return []
    if body.get("type") in ("transaction-response", "batch-response"):
        found = (_patient_in(e.get("resource") or {}) for e in body.get("entry", []))
        return list(dict.fromkeys(p for p in found if p))
    one = _patient_in(body)
    return [one] if one else []


def audit_event(api: FhirApi, principal: Principal, status: int, body: Any, pairs: list[tuple[str, str]]
                ) -> dict[str, Any]:
    """The AuditEvent of the current request, answered `status` with `body` (a dict, or None)."""
    exported = request.url_rule is not None and request.url_rule.rule.startswith(EXPORT_FILES)
    rtype, permission = pairs[0] if pairs else ("*", "r")
    args = request.view_args or {}
    what = f"{args['rtype']}/{args['rid']}" if args.get("rid") and not args["rid"].startswith("$") else rtype
    if exported:  # a Bulk Data status or file access: the job and file it reached
        what, permission = request.path.removeprefix("/fhir/"), "d" if request.method == "DELETE" else "r"
    elif "/" not in what and isinstance(body, dict) and body.get("resourceType") == what and body.get("id"):
        what = f"{what}/{body['id']}"  # a create, or a conditional write: the resource it wrote
    named = {"reference": what} if "/" in what and not exported else {"display": what}
    entities: list[dict[str, Any]] = [{"what": named,
                                       "description": request.url_rule.rule if request.url_rule else ""}]
    for patient in _patients_of(body):
        entities.append({"what": {"reference": f"Patient/{patient}"}, "role": {
            "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"}})
    outcome = "0" if status < 400 else ("4" if status < 500 else "8")
    event = {"resourceType": "AuditEvent",
             "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
             "action": AUDIT_ACTION.get(permission, "E"), "recorded": now_instant(), "outcome": outcome,
             "outcomeDesc": f"HTTP {status}",
             "agent": [{"who": {"display": principal.who}, "requestor": True,
                        "altId": principal.partner or principal.subject}],
             "source": {"observer": {"display": f"iop-suite {api.registry.service}"}}, "entity": entities}
    if principal.partner:  # the record of a partner's request is that partner's to read, and no other's
        event["meta"] = tag_partner({}, principal.partner)
    return event


def write_audit(api: FhirApi, tx: Transaction, event: dict[str, Any]) -> None:
    """Store an AuditEvent in `tx`, built by the suite itself (not validated again)."""
    token = current_principal.set(None)  # the audit trail is not a partner's submission
    try:
        api.repo.create(tx, event, rid=str(uuid.uuid4()), validated=True)
    finally:
        current_principal.reset(token)
