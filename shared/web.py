"""The app-factory helpers every service uses: store, FHIR endpoints, health, metrics, errors."""
from __future__ import annotations

import re
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flask import Flask, g, request
from flask import Response as FlaskResponse
from prometheus_client.core import GaugeMetricFamily
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from shared import access, smart, tracing
from shared import metrics as prom
from shared.config import Settings
from shared.fhir.interactions import FhirApi
from shared.fhir.outcome import FhirError, Issue, operation_outcome
from shared.fhir.registry import Registry
from shared.fhir.rest import FhirEndpoints, error_response, fhir_response, mount_fhir
from shared.fhir.store import Store, open_store
from shared.logs import configure, get_logger

VERSION = "0.1.0"
SMART_SECURITY = {
    "cors": False,
    "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                             "code": "SMART-on-FHIR"}]}],
    "description": "Bearer JWT (RS256/ES256 via JWKS, HS256 for development); SMART v2 scopes such as "
                   "system/CarePlan.rs or user/*.cruds (v1 .read/.write accepted).",
}
log = get_logger("iop.web")
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def smart_security(tokens: smart.TokenEndpoint) -> dict[str, Any]:
    """The CapabilityStatement's rest.security: SMART on FHIR, with the token endpoint (SMART App Launch's
    oauth-uris extension) and what is discoverable at /.well-known/smart-configuration."""
    return {**SMART_SECURITY, "extension": [{"url": OAUTH_URIS, "extension": [
        {"url": "token", "valueUri": tokens.url}]}],
        "description": SMART_SECURITY["description"] + " SMART Backend Services: client_credentials with a "
        "private_key_jwt assertion (RS384/ES384) at the token endpoint; patient/ scopes for a token bound to one "
        "Patient (a patient claim), confined to that patient's compartment; see /.well-known/smart-configuration."}
DRAIN_FACTOR = 4     # how much of an unread request body is read before answering, in IOP_MAX_BODY_BYTES
DRAIN_SECONDS = 10.0
UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes: no spans


class KafkaProbe:
    """Kafka's state from a real API round trip: "ok", "unreachable", or "unknown" before the first answer.

    The round trip runs in a background thread, one at a time and at most once a second, and a caller waits
    for it only `wait_s`: against a dead broker a connection attempt takes seconds, longer than a load
    balancer's probe timeout, and /readyz must answer quickly whatever Kafka does. The first answer may wait
    `first_wait_s`, so that a process just started reports what it found rather than "unknown".
    """

    def __init__(self, servers: str, wait_s: float = 0.5, first_wait_s: float = 3.0) -> None:
        self.servers, self.wait_s, self.first_wait_s = servers, wait_s, first_wait_s
        self._admin: Any = None
        self._state, self._checked_at, self._probing = "unknown", float("-inf"), threading.Event()
        self._probing.set()
        self._lock = threading.Lock()

    def state(self) -> str:
        with self._lock:
            stale = time.monotonic() - self._checked_at >= 1.0
            if stale and self._probing.is_set():
                self._probing = threading.Event()
                threading.Thread(target=self._refresh, args=(self._probing,), name="kafka-probe", daemon=True).start()
            probing = self._probing
        if stale:
            probing.wait(self.first_wait_s if self._state == "unknown" else self.wait_s)
        return self._state

    def reachable(self) -> bool:
        return self.state() == "ok"

    def _refresh(self, done: threading.Event) -> None:
        state = "ok" if self._probe() else "unreachable"
        with self._lock:
            self._state, self._checked_at = state, time.monotonic()
        done.set()

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
    store: Store
    registry: Registry
    api: FhirApi
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
        incident = str(uuid.uuid4())
        route = request.url_rule.rule if request.url_rule else "unmatched"
        # The frames, never the exception's message: it may quote what the client sent (PHI).
        log.error("unhandled error", incident=incident, route=route, method=request.method,
                  error=type(exc).__name__, frames=stack_frames(exc))
        return fhir_response(500, operation_outcome([Issue(
            f"internal error; the request was not applied. Incident {incident} in the server log.",
            code="exception", severity="fatal")]), {"X-Incident-Id": incident})


def stack_frames(exc: BaseException) -> list[str]:
    """Where an exception was raised, innermost last, as file:line in function (no values, no message)."""
    return [f"{frame.filename.rsplit('/site-packages/', 1)[-1]}:{frame.lineno} in {frame.name}"
            for frame in traceback.extract_tb(exc.__traceback__)]


def _register_body_drain(app: Flask, max_body_bytes: int) -> None:
    """Read what is left of a request body before answering, so the answer arrives.

    A client still sending a body the server will not read (too large: 413; refused first: 401, 415, 404)
    gets its connection reset once the server closes it, before it can read the answer; gunicorn itself
    drains only 64 KiB. Up to DRAIN_FACTOR times IOP_MAX_BODY_BYTES is read and discarded, for at most
    DRAIN_SECONDS; a larger or slower body is left, and that client may see the reset.
    """
    limit = DRAIN_FACTOR * max_body_bytes

    @app.after_request
    def drain(resp: FlaskResponse) -> FlaskResponse:
        length = request.content_length
        chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        if (length or chunked) and (length or 0) <= limit:
            drain_input(request.environ.get("wsgi.input"), limit)
        return resp


def drain_input(stream: Any, limit: int) -> int:
    """Read and discard up to `limit` bytes of a WSGI input stream; the number of bytes read."""
    read, deadline = 0, time.monotonic() + DRAIN_SECONDS
    while stream is not None and read < limit and time.monotonic() < deadline:
        try:
            chunk = stream.read(min(64 * 1024, limit - read))
        except (OSError, ValueError):  # the client went away, or the stream is closed
            break
        if not chunk:
            break
        read += len(chunk)
    return read


def _store_state(store: Store) -> str:
    try:
        store.ping()
        return "ok"
    except Exception:  # noqa: BLE001 - any failure means the store cannot serve
        return "unreachable"


def _register_observability(app: Flask, ctx: ServiceContext) -> None:
    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()
        if request.path not in UNTRACED:
            # Named by its route template once matched (record, below); a partner's traceparent is its parent.
            g.span = tracing.start(request.method, tracing.SpanKind.SERVER, request.headers.get("traceparent"),
                                   {"http.request.method": request.method})

    @app.teardown_request
    def end_span(_exc: BaseException | None) -> None:
        started = g.pop("span", None)
        if started is not None:
            tracing.finish(*started)

    @app.after_request
    def record(resp: FlaskResponse) -> FlaskResponse:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        labels = (request.method, route_template(ctx.registry, resp.status_code), str(resp.status_code))
        prom.HTTP_REQUESTS.labels(*labels).inc()
        prom.HTTP_SECONDS.labels(*labels).observe(elapsed)
        if "span" in g:
            span = g.span[0]
            span.update_name(f"{request.method} {labels[1]}")
            span.set_attributes({"http.route": labels[1], "http.response.status_code": resp.status_code})
        if resp.status_code >= 400 or request.method != "GET":
            log.info("request", method=request.method, route=endpoint, status=resp.status_code,
                     ms=round(elapsed * 1000, 1))
        return resp

    @app.get("/healthz")
    def healthz() -> FlaskResponse:
        return fhir_response(200, {"status": "up", "service": ctx.settings.service})

    @app.get("/readyz")
    def readyz() -> FlaskResponse:
        # Ready means able to serve requests, which needs the store; while Kafka is away writes still
        # commit and the outbox keeps their events, so Kafka is a degraded detail unless configured otherwise.
        checks = {"store": _store_state(ctx.store), "kafka": ctx.kafka.state()}
        required = ("store", "kafka") if ctx.settings.kafka_required else ("store",)
        ready = all(checks[name] == "ok" for name in required)
        degraded = [name for name, state in checks.items() if state != "ok" and name not in required]
        return fhir_response(200 if ready else 503, {"status": "ready" if ready else "not-ready", "checks": checks,
                                                     "degraded": degraded})

    def kafka_up() -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("iop_kafka_up", "1 while the service's web process reaches Kafka",
                                value=1.0 if ctx.kafka.reachable() else 0.0)

    collector = prom.StoreCollector(ctx.store, "Subscription" in ctx.registry.types, kafka_up)

    @app.get("/metrics")
    def metrics() -> FlaskResponse:
        return FlaskResponse(prom.exposition(collector), content_type=prom.CONTENT_TYPE)


def route_template(registry: Registry, status: int) -> str:
    """The matched rule with its variables as `{name}`: `/fhir/CarePlan/{id}`, never a raw path or id.

    A resource type the service serves, and an operation that was answered, keep their names; anything else a
    client can vary stays a placeholder, so the number of label values is bounded by the rules.
    """
    rule, args = request.url_rule, request.view_args or {}
    if rule is None:
        return "unmatched"
    path = rule.rule
    for name in rule.arguments:
        value = str(args.get(name, ""))
        keep = (name == "rtype" and value in registry.types) or (name == "op" and value.startswith("$")
                                                                  and status < 400)
        shown = value if keep else "{" + {"rtype": "type", "rid": "id", "vid": "vid"}.get(name, name) + "}"
        path = re.sub(rf"<(?:[^<>:]+:)?{name}>", lambda _m, shown=shown: shown, path)
    return path


def service_app(settings: Settings, registry: Registry, security: dict | None = None) -> Flask:
    """Build a service's Flask app: nothing connects before the first request but the store file."""
    configure(settings.log_level, settings.service)
    tracing.configure(settings.service)
    app = Flask(f"iop.{settings.service}")
    # A FHIR client is answered, never redirected: `/fhir/Patient/` is `/fhir/Patient`, and `//` is no path.
    app.url_map.strict_slashes = False
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    store = open_store(settings.database)
    api = FhirApi(store, registry, settings.base_url, settings.var_dir / "export" / settings.service)
    ctx = ServiceContext(settings, store, registry, api, KafkaProbe(settings.kafka_bootstrap))
    app.extensions["iop"] = ctx
    _register_errors(app)
    _register_body_drain(app, settings.max_body_bytes)
    _register_observability(app, ctx)
    tokens = smart.install(app, settings, store)
    audit = access.install(app, settings, api, (settings.smart_issuer, tokens.jwk["alg"], tokens.key.public_key()))
    mount_fhir(app, FhirEndpoints(api, VERSION, security or smart_security(tokens), audit))
    return app
