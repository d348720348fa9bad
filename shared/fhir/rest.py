"""The FHIR REST endpoints under /fhir, mounted by every service for the types it registers."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, request, send_file
from flask import Response as FlaskResponse

from shared.fhir import bulk
from shared.fhir.bundle_rules import bundle_shape
from shared.fhir.capability import capability_statement
from shared.fhir.interactions import FhirApi, Response, not_found_operation
from shared.fhir.media import negotiate
from shared.fhir.operations import check_body, check_query, validation_issues, validation_request
from shared.fhir.outcome import FhirError, Issue, informational, operation_outcome
from shared.fhir.partners import idempotency_scope
from shared.fhir.patch import JSON_PATCH, MERGE_PATCH
from shared.fhir.store import Transaction
from shared.fhir.transaction import BundleProcessor, unresolved_placeholders
from shared.fhir.util import compact_json
from shared.fhir.validation import check_id, parse_json, validate_resource

FHIR_JSON = "application/fhir+json"
ACCEPTED_MEDIA = {"application/fhir+json", "application/json", "application/json+fhir"}


def fhir_response(status: int, body: dict | None = None, headers: dict[str, str] | None = None) -> FlaskResponse:
    text = compact_json(body) if body is not None else ""
    resp = FlaskResponse(text, status=status, mimetype=FHIR_JSON)
    resp.headers["Content-Type"] = f"{FHIR_JSON}; charset=utf-8"
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def request_digest(document: dict[str, Any]) -> str:
    """What identifies a request's content for idempotency: its canonical JSON, `meta` aside."""
    content = {k: v for k, v in document.items() if k != "meta"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode("utf-8", "surrogatepass")
                          ).hexdigest()


def error_response(exc: FhirError) -> FlaskResponse:
    return fhir_response(exc.status, operation_outcome(exc.issues), exc.headers)


def read_body() -> dict[str, Any]:
    if request.mimetype not in ACCEPTED_MEDIA:
        raise FhirError.single(415, f"send {FHIR_JSON} (or application/json), not {request.mimetype or 'nothing'}",
                               code="not-supported")
    return parse_json(request.get_data(cache=True))


def read_patch() -> Any:
    """A PATCH body: a JSON Patch array, or an object: a FHIRPath Patch (a Parameters resource) or a merge patch."""
    if request.mimetype == JSON_PATCH:
        return parse_json(request.get_data(cache=True), array=True)
    if request.mimetype in ACCEPTED_MEDIA or request.mimetype == MERGE_PATCH:
        return parse_json(request.get_data(cache=True))
    raise FhirError.single(415, f"PATCH with {JSON_PATCH} (a JSON Patch), {FHIR_JSON} (a FHIRPath Patch "
                                f"Parameters) or {MERGE_PATCH}, not {request.mimetype or 'nothing'}",
                           code="not-supported")


def prefer(name: str) -> str | None:
    for part in request.headers.get("Prefer", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip('"')
    return None


def shaped(resp: Response) -> FlaskResponse:
    """Honour Prefer: return=minimal | representation | OperationOutcome on writes."""
    wanted = prefer("return")
    if wanted == "minimal" or resp.status == 204:  # a 204 has no body, whatever the client prefers
        return fhir_response(resp.status, None, resp.headers)
    if wanted == "OperationOutcome":
        return fhir_response(resp.status, informational(f"done: {resp.status}"), resp.headers)
    return fhir_response(resp.status, resp.body, resp.headers)


def shaped_entries(bundle: dict[str, Any]) -> dict[str, Any]:
    """A batch or transaction answers with its response Bundle whatever the client prefers: `Prefer: return=`
    shapes each entry (minimal: no resource; OperationOutcome: an outcome in place of the resource)."""
    wanted = prefer("return")
    if wanted not in ("minimal", "OperationOutcome") or "entry" not in bundle:
        return bundle
    entries = []
    for entry in bundle["entry"]:
        entry = {k: v for k, v in entry.items() if k != "resource"}
        if wanted == "OperationOutcome" and "outcome" not in entry.get("response", {}):
            entry["response"] = {**entry["response"], "outcome": informational(f"done: {entry['response']['status']}")}
        entries.append(entry)
    return {**bundle, "entry": entries}


def as_read(resp: Response) -> FlaskResponse:
    """A read answers with the resource: Prefer return= applies to writes only."""
    return fhir_response(resp.status, resp.body, resp.headers)


def reject_dot_segments() -> None:
    """`.` and `..` are never ids: refuse them before any route treats them as one (path traversal)."""
    segments = request.path.split("/")
    if segments[1:2] == ["fhir"] and any(segment in (".", "..") for segment in segments):
        raise FhirError.single(400, "a FHIR URL has no '.' or '..' segments", code="invalid")


def search_items() -> list[tuple[str, str]]:
    items = list(request.args.items(multi=True))
    if request.method == "POST":
        items += list(request.form.items(multi=True))
    return items


class FhirEndpoints:
    def __init__(self, api: FhirApi, software_version: str, security: dict | None = None,
                 audit: Callable[[Transaction, Response], None] | None = None) -> None:
        """`audit(tx, resp)`: records a write's AuditEvent in the write's own transaction (shared/access.py)."""
        self.api = api
        self.bundles = BundleProcessor(api)
        self.software_version = software_version
        self.security = security
        self.audit = audit or (lambda tx, resp: None)

    def written(self, tx: Transaction, resp: Response) -> Response:
        """A write's answer, its audit record added to the same transaction (one commit, not two)."""
        self.audit(tx, resp)
        return resp

    def metadata(self) -> FlaskResponse:
        return fhir_response(200, capability_statement(self.api.registry, self.api.base, self.software_version,
                                                       self.security))

    def idempotent(self, scope: str, key: str | None, sent: dict[str, Any], work: Any,
                   shape: Any = shaped) -> FlaskResponse:
        """Run `work(tx) -> Response` once per key; a repeat of the same request returns the first answer and
        stores nothing. The same key on a different request is a conflict: answering it with the first request's
        answer would tell the client that what it sent now was applied (422, as the IETF Idempotency-Key draft
        has it)."""
        scope = idempotency_scope(scope)  # a referral partner never sees another caller's first answer
        digest = request_digest(sent)
        with self.api.store.transaction() as tx:
            if key and (seen := tx.recall(scope, key)) is not None:
                if seen.get("digest", digest) != digest:
                    raise FhirError.single(422, "this Bundle.identifier or Idempotency-Key was already used for a "
                                                "different request; a repeat must send the same content",
                                           code="business-rule")
                return shape(Response(seen["status"], seen["body"], seen["headers"]))
            resp = self.written(tx, work(tx))
            if key:
                tx.remember(scope, key, {"status": resp.status, "body": resp.body, "headers": resp.headers,
                                         "digest": digest})
        return shape(resp)

    def system(self) -> FlaskResponse:
        bundle = read_body()
        if bundle.get("resourceType") != "Bundle":
            raise FhirError.single(422, "the service base accepts a Bundle", code="invalid",
                                   expression="Bundle.resourceType")
        ident = bundle_shape(bundle).get("identifier") or {}
        key = request.headers.get("Idempotency-Key") or (
            f"{ident.get('system', '')}|{ident['value']}" if ident.get("value") else None)
        refused = self.bundles.check(bundle)  # before the write lock: validation needs no store
        return self.idempotent("bundle", key, bundle,
                               lambda tx: Response(200, self.bundles.process(tx, bundle, refused)),
                               shape=lambda resp: fhir_response(resp.status, shaped_entries(resp.body), resp.headers))

    def type_level(self, rtype: str) -> FlaskResponse:
        if rtype.startswith("$"):
            return self.operation(None, None, rtype[1:])
        if request.method == "GET":
            return fhir_response(200, self.api.search(rtype, search_items(), prefer("handling") == "strict").body)
        if request.method in ("PUT", "DELETE"):
            return self.conditional(rtype)
        resource = read_body()
        validate_resource(resource, rtype)
        unresolved_placeholders(resource, rtype)
        key = request.headers.get("Idempotency-Key")
        return self.idempotent(f"create:{rtype}", key, resource, lambda tx: self.api.create(
            tx, resource, request.headers.get("If-None-Exist"), validated=True))

    def conditional(self, rtype: str) -> FlaskResponse:
        """`PUT Type?criteria` and `DELETE Type?criteria`."""
        criteria = request.query_string.decode("utf-8", "replace")
        if not criteria:
            raise FhirError.single(405, f"{request.method} an instance ({rtype}/id), or give search criteria",
                                   code="not-supported")
        if request.method == "DELETE":
            self.api.registry.get(rtype)
            with self.api.store.transaction() as tx:
                return shaped(self.written(tx, self.api.conditional_delete(tx, rtype, criteria)))
        resource = read_body()
        validate_resource(resource, rtype)
        unresolved_placeholders(resource, rtype)
        with self.api.store.transaction() as tx:
            return shaped(self.written(tx, self.api.conditional_update(tx, rtype, criteria, resource,
                                                                       request.headers.get("If-Match"))))

    def instance(self, rtype: str, rid: str) -> FlaskResponse:
        if rid.startswith("$"):
            return self.operation(rtype, None, rid[1:])
        check_id(rid)  # before the body: a bad URL is a 400 whatever the body holds
        if request.method == "GET":
            return as_read(self.api.read(rtype, rid, list(request.args.items(multi=True))))
        if request.method == "POST":
            raise FhirError.single(405, "POST a new resource to the type, not to an instance", code="not-supported")
        if request.method == "DELETE":
            with self.api.store.transaction() as tx:
                return shaped(self.written(tx, self.api.delete(tx, rtype, rid)))
        if request.method == "PATCH":
            document = read_patch()
            with self.api.store.transaction() as tx:
                patched = self.api.patch(tx, rtype, rid, document, request.headers.get("If-Match"))
                return shaped(self.written(tx, patched))
        resource = read_body()
        validate_resource(resource, rtype)
        unresolved_placeholders(resource, rtype)
        with self.api.store.transaction() as tx:
            resp = self.written(tx, self.api.update(tx, rtype, rid, resource, request.headers.get("If-Match"),
                                                    validated=True))
        return shaped(resp)

    def instance_operation(self, rtype: str, rid: str, op: str) -> FlaskResponse:
        check_id(rid)
        if not op.startswith("$"):
            raise FhirError.single(404, f"no endpoint {rtype}/{{id}}/{op}", code="not-found")
        return self.operation(rtype, rid, op[1:])

    def operation(self, rtype: str | None, rid: str | None, name: str) -> FlaskResponse:
        op = self.api.registry.operations.get((rtype, rid is not None, name))
        if op is None:  # an operation may be on a type the service does not hold (Patient/$everything)
            if rtype is not None:
                self.api.registry.get(rtype)
            raise not_found_operation(name)
        args = list(request.args.items(multi=True))
        if request.method == "GET" and op.affects_state:  # FHIR: only affectsState=false operations run on GET
            raise FhirError(405, [Issue(f"${name} changes state: invoke it with POST", code="not-supported")],
                            {"Allow": "POST"})
        check_query(args, op.parameters, complete=request.method == "GET")
        body = None
        if request.method == "POST":
            body = read_body() if request.content_length or request.headers.get("Transfer-Encoding") else None
            check_body(body, op.parameters, name)
        status, out, *headers = op.handler(api=self.api, rtype=rtype, rid=rid, body=body, args=args,
                                           headers=dict(request.headers), url=request.url)
        return fhir_response(status, out, headers[0] if headers else None)

    def validate_op(self, rtype: str) -> FlaskResponse:
        self.api.registry.get(rtype)
        request_of = validation_request(read_body(), rtype, list(request.args.items(multi=True)))
        issues = validation_issues(request_of, rtype)
        if any(i.severity in ("error", "fatal") for i in issues):
            return fhir_response(200, operation_outcome(issues))
        return fhir_response(200, operation_outcome([*issues, Issue(f"the {rtype} is valid", code="informational",
                                                                    severity="information")]))


def export_status(api: FhirApi, job: str) -> FlaskResponse:
    """A Bulk Data job's status URL: 202 while it runs, 200 with the manifest (JSON) once done; DELETE cancels."""
    if request.method == "DELETE":
        bulk.cancel(api, job)
        return fhir_response(202, informational("the export was cancelled and its files removed"))
    status, manifest, headers = bulk.status(api, job)
    if manifest is None:
        return fhir_response(status, None, headers)
    resp = FlaskResponse(json.dumps(manifest, separators=(",", ":")), status=status, mimetype="application/json")
    resp.headers.update(headers)
    return resp


def export_file(api: FhirApi, job: str, name: str) -> FlaskResponse:
    """One NDJSON file of a finished export, to the client that started it."""
    return send_file(bulk.file_path(api, job, name), mimetype=bulk.NDJSON, conditional=False, etag=False)


def history(api: FhirApi, rtype: str | None, rid: str | None) -> FlaskResponse:
    return fhir_response(200, api.history(rtype, rid, search_items(), prefer("handling") == "strict").body)


def mount_fhir(app: Flask, endpoints: FhirEndpoints) -> None:
    bp = Blueprint("fhir", __name__, url_prefix="/fhir")
    e, api = endpoints, endpoints.api
    bp.add_url_rule("/metadata", "metadata", e.metadata, methods=["GET"])
    bp.add_url_rule("", "system", e.system, methods=["POST"], strict_slashes=False)
    bp.add_url_rule("/_history", "system_history", lambda: history(api, None, None), methods=["GET"])
    bp.add_url_rule("/<rtype>", "type", e.type_level, methods=["GET", "POST", "PUT", "DELETE"])
    bp.add_url_rule("/<rtype>/_search", "search_post", lambda rtype: fhir_response(
        200, api.search(rtype, search_items(), prefer("handling") == "strict").body), methods=["POST"])
    bp.add_url_rule("/<rtype>/_history", "type_history", lambda rtype: history(api, rtype, None), methods=["GET"])
    bp.add_url_rule("/<rtype>/$validate", "validate", e.validate_op, methods=["POST"])
    bp.add_url_rule("/<rtype>/<rid>", "instance", e.instance, methods=["GET", "PUT", "DELETE", "POST", "PATCH"])
    bp.add_url_rule("/<rtype>/<rid>/_history", "instance_history", lambda rtype, rid: history(api, rtype, rid),
                    methods=["GET"])
    bp.add_url_rule("/<rtype>/<rid>/_history/<vid>", "vread",
                    lambda rtype, rid, vid: as_read(api.vread(rtype, rid, vid)), methods=["GET"])
    bp.add_url_rule("/<rtype>/<rid>/<op>", "instance_op", e.instance_operation, methods=["GET", "POST"])
    bp.before_request(lambda: negotiate(request.headers.get("Accept"), request.args.getlist("_format")))
    app.register_blueprint(bp)
    # Bulk Data status and files answer application/json and NDJSON, which the FHIR negotiation would refuse.
    files = Blueprint("bulk", __name__, url_prefix="/fhir/_export")
    files.add_url_rule("/<job>", "status", lambda job: export_status(api, job), methods=["GET", "DELETE"])
    files.add_url_rule("/<job>/<name>", "file", lambda job, name: export_file(api, job, name), methods=["GET"])
    app.register_blueprint(files)
    app.before_request(reject_dot_segments)  # the app's, not the blueprint's: it must see unrouted paths too
