"""The app-factory helpers every service uses: store, FHIR endpoints, health, metrics, errors."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, g, request
from flask import Response as FlaskResponse
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from shared import access
from shared.config import Settings
from shared.events.failures import handler_error_gauges
from shared.fhir.interactions import FhirApi
from shared.fhir.outcome import FhirError, Issue, operation_outcome
from shared.fhir.registry import Registry
from shared.fhir.rest import FhirEndpoints, error_response, fhir_response, mount_fhir
from shared.fhir.store import SQLiteStore
from shared.logs import configure, get_logger
from shared.metrics import Metrics

VERSION = "0.1.0"
SMART_SECURITY = {
    "cors": False,
    "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                             "code": "SMART-on-FHIR"}]}],
    "description": "Bearer JWT (RS256/ES256 via JWKS, HS256 for development); SMART v2 scopes such as "
                   "system/CarePlan.rs or user/*.cruds (v1 .read/.write accepted).",
}
log = get_logger("iop.web")


class KafkaProbe:
    """Answers 'is the broker reachable' with a real API round trip, cached for a second."""

    def __init__(self, servers: str) -> None:
        self.servers = servers
        self._admin: Any = None
        self._checked_at, self._ok, self._lock = 0.0, False, threading.Lock()

    def reachable(self) -> bool:
        with self._lock:
            if time.monotonic() - self._checked_at < 1.0:
                return self._ok
            self._ok = self._probe()
            self._checked_at = time.monotonic()
            return self._ok

    def _probe(self) -> bool:
        from kafka import KafkaAdminClient

        try:
            if self._admin is None:
                self._admin = KafkaAdminClient(bootstrap_servers=self.servers, request_timeout_ms=2000,
                                               bootstrap_timeout_ms=2000)
            self._admin.list_topics()
            return True
        except Exception:  # noqa: BLE001 - any failure means not reachable
            if self._admin is not None:
                try:
                    self._admin.close()
                except Exception:  # noqa: BLE001
                    pass
            self._admin = None
            return False


@dataclass
class ServiceContext:
    settings: Settings
    store: SQLiteStore
    registry: Registry
    api: FhirApi
    metrics: Metrics
    kafka: KafkaProbe


def _register_errors(app: Flask) -> None:
    @app.errorhandler(FhirError)
    def fhir_error(exc: FhirError) -> FlaskResponse:
        return error_response(exc)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge) -> FlaskResponse:
        return error_response(FhirError.single(413, "the request body is larger than this server accepts",
                                               code="too-costly"))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> FlaskResponse:
        code = {404: "not-found", 405: "not-supported"}.get(exc.code or 400, "invalid")
        return error_response(FhirError.single(exc.code or 400, exc.description or exc.name, code=code))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> FlaskResponse:
        log.error("unhandled error", exc_info=True, path=request.path, method=request.method)
        return fhir_response(500, operation_outcome([Issue("internal error; the request was not applied",
                                                           code="exception", severity="fatal")]))


def _register_observability(app: Flask, ctx: ServiceContext) -> None:
    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def record(resp: FlaskResponse) -> FlaskResponse:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        ctx.metrics.inc("iop_http_requests_total", {"method": request.method, "status": str(resp.status_code)})
        ctx.metrics.observe("iop_http_request_seconds", elapsed, {"route": endpoint})
        if resp.status_code >= 400 or request.method != "GET":
            log.info("request", method=request.method, route=endpoint, status=resp.status_code,
                     ms=round(elapsed * 1000, 1))
        return resp

    @app.get("/healthz")
    def healthz() -> FlaskResponse:
        return fhir_response(200, {"status": "up", "service": ctx.settings.service})

    @app.get("/readyz")
    def readyz() -> FlaskResponse:
        checks: dict[str, str] = {}
        try:
            ctx.store.ping()
            checks["store"] = "ok"
        except Exception:  # noqa: BLE001
            checks["store"] = "unreachable"
        checks["kafka"] = "ok" if ctx.kafka.reachable() else "unreachable"
        ready = checks["store"] == "ok" and (checks["kafka"] == "ok" or not ctx.settings.kafka_required)
        return fhir_response(200 if ready else 503, {"status": "ready" if ready else "not-ready", "checks": checks})

    @app.get("/metrics")
    def metrics() -> FlaskResponse:
        gauges = {("iop_outbox_unsent", ()): float(len(ctx.store.unsent_events(10000)))}
        for name, value in ctx.store.values_with_prefix("lag:"):
            _, group, topic = name.split(":", 2)
            gauges[("iop_consumer_lag", (("group", group), ("topic", topic)))] = float(value)
        gauges.update(handler_error_gauges(ctx.store))
        return FlaskResponse(ctx.metrics.render(gauges), mimetype="text/plain; version=0.0.4")


def service_app(settings: Settings, registry: Registry, security: dict | None = None) -> Flask:
    """Build a service's Flask app: nothing connects before the first request but the store file."""
    configure(settings.log_level, settings.service)
    app = Flask(f"iop.{settings.service}")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    store = SQLiteStore(settings.database)
    api = FhirApi(store, registry, settings.base_url)
    ctx = ServiceContext(settings, store, registry, api, Metrics(), KafkaProbe(settings.kafka_bootstrap))
    app.extensions["iop"] = ctx
    _register_errors(app)
    _register_observability(app, ctx)
    access.install(app, settings, api)
    mount_fhir(app, FhirEndpoints(api, VERSION, security or SMART_SECURITY))
    return app
