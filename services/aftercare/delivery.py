"""Sending queued notifications to external EHRs: one FIFO queue per subscription.

A dispatcher thread hands each subscription with due work to a pool thread that drains its
queue in order, so one dead or slow EHR delays only itself, and one patient's events reach
an EHR in the order they happened. Consent is checked at send time (a revocation stops what
is queued); each attempt is recorded as an AuditEvent; event numbers are assigned when an
event first passes the consent gate, so a subscriber sees no gaps.

Several aftercare workers may share one store: a worker drains a subscription's queue only while it holds
that queue's claim (a lease named after the queue, renewed while it works, IOP_WORK_CLAIM_S), so each
subscription has one delivery in flight and keeps its order; a claim whose worker died expires and another
worker carries on from the first undelivered item.
"""
from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import requests

from services.aftercare import consent, notifications, writeback
from services.aftercare.backoff import RetryPolicy
from services.aftercare.handlers import identifiers_key
from services.aftercare.subscriptions import SubscriptionSpec, parse_subscription
from shared import metrics, tracing
from shared.events.outbox import Outbox
from shared.fhir.registry import Repository
from shared.fhir.search import reference_condition, token_condition
from shared.fhir.store import Store, Stored, Transaction, WorkItem
from shared.fhir.util import now_instant
from shared.logs import get_logger
from shared.replicas import Lease, holder_id

log = get_logger("iop.delivery")
PURPOSE = "TREAT"
AUDIT_TYPE = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110106", "display": "Export"}
AGENT = {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                              "code": "datacollector"}]}, "who": {"display": "iop-suite aftercare"}, "requestor": False}


def secret_key(sid: str) -> str:
    return f"sub-secret:{sid}"


def counter_key(sid: str) -> str:
    return f"sub-events:{sid}"


def last_sent_key(sid: str) -> str:
    return f"sub-last-sent:{sid}"


@dataclasses.dataclass
class Attempt:
    ok: bool
    status: int | None
    ms: float
    error: str = ""


class Dispatcher:
    def __init__(self, store: Store, repo: Repository, outbox: Outbox, base_url: str, policy: RetryPolicy,
                 clock: Callable[[], datetime] | None = None, parallel: int = 8, claim_s: float = 15.0) -> None:
        self.store, self.repo, self.outbox, self.base_url, self.policy = store, repo, outbox, base_url, policy
        self.clock = clock or (lambda: datetime.now(UTC))
        self.pool, self.parallel = ThreadPoolExecutor(parallel, thread_name_prefix="delivery"), parallel
        self.owner, self.claim_s = holder_id(self), claim_s
        self._claims: dict[str, Lease] = {}  # the subscriptions this worker drains now, by id
        self._inflight: set[str] = set()
        self._lock = threading.Lock()
        self._local = threading.local()

    # -- scheduling ----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Dispatch when a new item is queued (the store's commit watch rings) and at least every half second
        (retries come due, handshakes complete)."""
        watch = self.store.commit_watch(0.005, "work")
        beat, renewed = 0.0, time.monotonic()
        while not stop.is_set():
            try:
                if time.monotonic() - renewed > self.claim_s / 3:
                    renewed = time.monotonic()
                    self.renew_claims()
                if time.monotonic() - beat > 1.0:
                    beat = time.monotonic()
                    self.heartbeats()
                self.dispatch_once()
                watch.wait(stop, 0.5)
            except Exception:  # noqa: BLE001 - the dispatcher must outlive any one failure
                log.error("dispatch failed", exc_info=True)
                stop.wait(0.5)
        watch.close()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.release_claims()

    def dispatch_once(self) -> None:
        # In random order: workers woken by the same commit then claim different queues and share the work.
        due = self.store.queues_due("queued", now_instant())
        random.shuffle(due)
        for queue in due:
            sid = queue.removeprefix("sub:")
            with self._lock:
                if len(self._inflight) >= self.parallel:
                    break  # no thread free: leave the other queues to a worker that has one
                if sid in self._inflight:
                    continue
                claim = self._claims.get(sid) or Lease(self.store, f"work:{queue}", self.owner, self.claim_s)
            if not claim.acquire():
                with self._lock:
                    self._claims.pop(sid, None)
                continue  # another worker drains this subscription
            with self._lock:
                self._inflight.add(sid)
                self._claims[sid] = claim
            self.pool.submit(self._drain, sid)

    def renew_claims(self) -> None:
        """Keep the claims of the queues being drained, even through one long attempt; a lost one stops its drain.
        An idle queue's claim is kept until it expires (so replicas do not trade it back and forth)."""
        with self._lock:
            claims = [(sid, self._claims[sid]) for sid in self._inflight if sid in self._claims]
        for sid, claim in claims:
            if not claim.renew():
                log.warning("delivery claim lost; another worker carries on", subscription_id=sid)

    def release_claims(self) -> None:
        """On a clean stop: let other workers take this one's queues at once."""
        with self._lock:
            claims, self._claims = list(self._claims.values()), {}
        for claim in claims:
            try:
                claim.release()
            except Exception:  # noqa: BLE001 - the store is away: the claims expire instead
                log.warning("delivery claim not released", exc_info=True)

    def claimed(self, sid: str) -> bool:
        """Whether this worker may deliver the next item of a subscription: the store still names it the claim's
        holder (or, called outside the dispatcher, nobody claims queues at all)."""
        with self._lock:
            claim = self._claims.get(sid)
        if claim is None or claim.confirm():
            return True
        log.warning("delivery claim taken over; stopping this drain", subscription_id=sid)
        return False

    def heartbeats(self) -> None:
        """Queue a heartbeat for each active subscription that asked for one and has heard nothing for that long."""
        now = self.clock().timestamp()
        for sub in self.store.search("Subscription", [token_condition("status", "active")], "r.created_seq",
                                     1000, 0).items:
            spec = parse_subscription(sub.resource)
            if isinstance(spec, list) or not spec.heartbeat_period_s or spec.write_back:
                continue
            quiet_since = float(self.store.get_value(last_sent_key(sub.id)) or 0)
            if now - quiet_since < spec.heartbeat_period_s:
                continue
            with self._lock:
                if sub.id in self._inflight:
                    continue  # being drained here: not quiet
                claim = self._claims.get(sub.id) or Lease(self.store, f"work:sub:{sub.id}", self.owner, self.claim_s)
            # Only the worker that claims the queue looks at it and adds to it: one heartbeat across replicas.
            if not claim.acquire():
                continue
            with self._lock:
                self._claims[sub.id] = claim
            quiet_since = float(self.store.get_value(last_sent_key(sub.id)) or 0)
            if now - quiet_since >= spec.heartbeat_period_s and not self.store.work(f"sub:{sub.id}", ("queued",), 1):
                with self.store.transaction() as tx:
                    if unchanged(tx, sub):
                        tx.enqueue(f"sub:{sub.id}", {"kind": "heartbeat"})

    def _drain(self, sid: str) -> None:
        try:
            while self.claimed(sid) and self.deliver_next(sid):
                pass
        except Exception:  # noqa: BLE001
            log.error("delivery failed", exc_info=True, subscription_id=sid)
        finally:
            with self._lock:
                self._inflight.discard(sid)

    # -- one item ------------------------------------------------------------------------------
    def deliver_next(self, sid: str) -> bool:
        """Handle the oldest due item of one subscription; False when there is nothing more to do now."""
        sub = self.store.read("Subscription", sid)
        items = self.store.work(f"sub:{sid}", ("queued",), 1)
        if sub is not None and sub.resource.get("status") == "requested":
            # The handshake goes first, even behind events that wait for the subscription to be active.
            items = [i for i in self.store.work(f"sub:{sid}", ("queued",), 10000) if i.body["kind"] == "handshake"][:1]
        if not items or items[0].not_before > now_instant():
            return False
        item = items[0]
        if sub is None or sub.deleted or sub.resource.get("status") in ("off", "entered-in-error"):
            with self.store.transaction() as tx:
                tx.update_work(item.seq, "cancelled", item.attempts, item.not_before)
            return True
        spec = parse_subscription(sub.resource)
        if isinstance(spec, list):
            return False
        spec = dataclasses.replace(spec, secret=self.store.get_value(secret_key(sid)))
        if item.body["kind"] == "handshake":
            return self._handshake(sub, spec, item)
        if sub.resource.get("status") != "active":
            return False  # requested (handshake pending) or error: deliveries wait
        if item.body["kind"] == "heartbeat":
            return self._heartbeat(sub, spec, item)
        return self._notify(sub, spec, item)

    def _heartbeat(self, sub: Stored, spec: SubscriptionSpec, item: WorkItem) -> bool:
        count = int(self.store.get_value(counter_key(sub.id)) or 0)
        attempt = self._post(spec, notifications.heartbeat_bundle(spec, sub.id, "active", count, self.base_url))
        with self.store.transaction() as tx:
            self._audit(tx, sub.id, None, attempt, "heartbeat")
            tx.update_work(item.seq, "delivered" if attempt.ok else "failed", item.attempts + 1, item.not_before)
            if attempt.ok:
                tx.put_value(last_sent_key(sub.id), str(self.clock().timestamp()))
        return True

    def _handshake(self, sub: Stored, spec: SubscriptionSpec, item: WorkItem) -> bool:
        if spec.write_back:
            attempt = self._get(f"{spec.endpoint.rstrip('/')}/metadata", spec)
        else:
            attempt = self._post(spec, notifications.handshake_bundle(spec, sub.id, self.base_url))
        with self.store.transaction() as tx:
            self._audit(tx, sub.id, None, attempt, "handshake")
            if attempt.ok:
                if not self._set_status(tx, sub, "active"):
                    return True  # changed or deleted meanwhile: the next pass redoes the handshake or cancels it
                tx.update_work(item.seq, "delivered", item.attempts + 1, item.not_before)
                tx.put_value(last_sent_key(sub.id), str(self.clock().timestamp()))
                return True
            return self._failed(tx, sub, item, attempt)

    def _notify(self, sub: Stored, spec: SubscriptionSpec, item: WorkItem) -> bool:
        """The EHR's request continues the trace of the event that queued it."""
        with tracing.span("deliver notification", tracing.SpanKind.INTERNAL, item.body.get("traceparent"),
                          {"iop.subscription_id": sub.id, "cloudevents.event_type": item.body.get("type", "")}):
            return self._notify_in_span(sub, spec, item)

    def _notify_in_span(self, sub: Stored, spec: SubscriptionSpec, item: WorkItem) -> bool:
        patient = item.body["patient"]
        decision = self._consent(patient, spec, item)
        if not decision.permit:
            with self.store.transaction() as tx:
                tx.update_work(item.seq, "blocked-consent", item.attempts, item.not_before)
                self._audit(tx, sub.id, patient, Attempt(False, None, 0.0, decision.reason), "blocked-by-consent")
            metrics.EHR_DELIVERIES.labels("blocked-consent").inc()
            log.info("delivery blocked by consent", subscription_id=sub.id, patient_id=patient, reason=decision.reason)
            return True
        number = item.number or self._assign_number(sub.id, item)
        attempt = self._send(sub, spec, item, number)
        outcome = "delivered" if attempt.ok else "failed"
        metrics.EHR_DELIVERIES.labels(outcome).inc()
        metrics.EHR_SECONDS.labels(outcome).observe(attempt.ms / 1000)
        with self.store.transaction() as tx:
            self._audit(tx, sub.id, patient, attempt, f"event {number}")
            if not attempt.ok:
                return self._failed(tx, sub, item, attempt)
            tx.update_work(item.seq, "delivered", item.attempts + 1, item.not_before, number)
            tx.put_value(last_sent_key(sub.id), str(self.clock().timestamp()))
            self._provenance(tx, item, decision.consent_id, sub.id)
            self.outbox.emit(tx, "iop.ehr.delivered", patient, sub.resource)
        return True

    def _send(self, sub: Stored, spec: SubscriptionSpec, item: WorkItem, number: int) -> Attempt:
        if spec.write_back:
            ident = self._patient_identifier(item.body["patient"], spec)
            if ident is None:
                return Attempt(False, None, 0.0, "no patient identifier in the EHR's system")
            body = writeback.writeback_transaction([r for r in item.body["resources"] if r["resourceType"] in
                                                    ("CarePlan", "Goal", "ServiceRequest")], ident,
                                                   consent.part2_notice(), logical_refs=True)
            return self._post(spec, body, spec.endpoint.rstrip("/"))
        event = notifications.NotificationEvent(number, item.body["time"], item.body["focus"],
                                                tuple(item.body["resources"]), item.body.get("source_base"))
        bundle = notifications.notification_bundle(spec, sub.id, "active", "event-notification", [event], number,
                                                   self.base_url)
        return self._post(spec, bundle)

    def _failed(self, tx: Transaction, sub: Stored, item: WorkItem, attempt: Attempt) -> bool:
        first = datetime.fromisoformat(item.created_at.replace("Z", "+00:00"))
        if self.policy.give_up(first, self.clock()):
            tx.update_work(item.seq, "queued", item.attempts + 1, item.not_before)
            if self._set_status(tx, sub, "error"):
                metrics.EHR_DELIVERIES.labels("gave-up").inc()
                self.outbox.emit(tx, "iop.ehr.failed", item.body.get("patient") or "-", sub.resource)
                log.warning("subscription in error after retries", subscription_id=sub.id, attempts=item.attempts + 1)
            return False
        delay = self.policy.next_delay(item.attempts)
        not_before = (self.clock() + timedelta(seconds=delay)).isoformat(timespec="milliseconds")
        tx.update_work(item.seq, "queued", item.attempts + 1, not_before.replace("+00:00", "Z"))
        return False

    # -- helpers -------------------------------------------------------------------------------
    def _consent(self, patient: str, spec: SubscriptionSpec, item: WorkItem) -> consent.Decision:
        if not spec.recipient:
            return consent.Decision(False, "subscription names no recipient organisation")
        found = self.store.search("Consent", [reference_condition("patient", f"Patient/{patient}", None)],
                                  "r.created_seq", 1000, 0).items
        focus = item.body["resources"][0] if item.body["resources"] else {}
        return consent.may_disclose([c.resource for c in found], patient, spec.recipient, PURPOSE,
                                    (focus.get("meta") or {}).get("security", []), self.clock())

    def _assign_number(self, sid: str, item: WorkItem) -> int:
        with self.store.transaction() as tx:
            number = int(tx.get_value(counter_key(sid)) or 0) + 1
            tx.put_value(counter_key(sid), str(number))
            tx.update_work(item.seq, "queued", item.attempts, item.not_before, number)
        return number

    def _patient_identifier(self, patient: str, spec: SubscriptionSpec) -> dict | None:
        raw = self.store.get_value(identifiers_key(patient))
        return next((i for i in json.loads(raw) if i.get("system") == spec.patient_identifier_system), None) \
            if raw else None

    def _session(self) -> requests.Session:
        if getattr(self._local, "session", None) is None:
            self._local.session = requests.Session()
        return self._local.session

    def _post(self, spec: SubscriptionSpec, bundle: dict, url: str | None = None) -> Attempt:
        body = json.dumps(bundle, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/fhir+json", **dict(spec.headers)}
        if spec.secret:
            headers[notifications.SIGNATURE_HEADER] = notifications.hmac_signature(spec.secret, body)
        return self._call("POST", url or spec.endpoint, spec, data=body, headers=headers)

    def _get(self, url: str, spec: SubscriptionSpec) -> Attempt:
        return self._call("GET", url, spec, headers={"Accept": "application/fhir+json", **dict(spec.headers)})

    def _call(self, method: str, url: str, spec: SubscriptionSpec, **kwargs: object) -> Attempt:
        started = time.perf_counter()
        with tracing.span(f"{method} EHR", tracing.SpanKind.CLIENT, attributes={"http.request.method": method}) as span:
            try:
                return self._request(method, url, spec, started, span, **kwargs)
            except requests.RequestException as exc:
                span.set_attribute("error.type", type(exc).__name__)
                return Attempt(False, None, (time.perf_counter() - started) * 1000, type(exc).__name__)

    def _request(self, method: str, url: str, spec: SubscriptionSpec, started: float, span: tracing.Span,
                 **kwargs: object) -> Attempt:
        headers = dict(kwargs.pop("headers", None) or {})  # type: ignore[call-overload]
        if (parent := tracing.traceparent()) is not None:
            headers["traceparent"] = parent
        resp = self._session().request(method, url, timeout=spec.timeout_s, headers=headers, **kwargs)
        span.set_attribute("http.response.status_code", resp.status_code)
        ms = (time.perf_counter() - started) * 1000
        return Attempt(200 <= resp.status_code < 300, resp.status_code, ms,
                       "" if resp.ok else f"HTTP {resp.status_code}")

    def _set_status(self, tx: Transaction, sub: Stored, status: str) -> bool:
        """Give the Subscription this status, unless it changed or was deleted since `sub` was read: a client's
        change wins over work queued before it. False when the work is dropped."""
        if not unchanged(tx, sub):
            log.info("subscription changed while the worker used it; its work is dropped", subscription_id=sub.id)
            return False
        if sub.resource.get("status") != status:
            updated = dict(sub.resource, status=status)
            updated.pop("error", None)
            if status == "error":
                updated["error"] = "delivery failed after retries; set status to active to resume"
            self.repo.update(tx, "Subscription", sub.id, updated, expected_version=sub.version, validated=True)
        return True

    def _audit(self, tx: Transaction, sid: str, patient: str | None, attempt: Attempt, what: str) -> None:
        end = datetime.now(UTC)
        start = end - timedelta(milliseconds=attempt.ms)
        entities = [{"what": {"reference": f"Subscription/{sid}"}, "description": what}]
        if patient:
            entities.append({"what": {"reference": f"Patient/{patient}"}})
        event = {"resourceType": "AuditEvent", "type": AUDIT_TYPE, "action": "E",
                 "period": {"start": _instant(start), "end": _instant(end)}, "recorded": _instant(end),
                 "outcome": "0" if attempt.ok else "4",
                 "outcomeDesc": (f"HTTP {attempt.status}" if attempt.status else attempt.error or "not sent")
                 + f"; {attempt.ms:.0f} ms",
                 "agent": [AGENT], "source": {"observer": {"display": "iop-suite aftercare"}}, "entity": entities}
        self.repo.create(tx, event, rid=str(uuid.uuid4()), validated=True)

    def _provenance(self, tx: Transaction, item: WorkItem, consent_id: str | None, sid: str) -> None:
        base = item.body.get("source_base") or self.base_url
        focus = item.body["focus"]
        prov = {"resourceType": "Provenance", "target": [{"reference": f"{base}/{focus}"}], "recorded": now_instant(),
                "activity": {"text": "disclosure to an external EHR under 42 CFR Part 2 consent"},
                "agent": [{"who": {"display": "iop-suite aftercare"}}],
                "entity": [{"role": "source", "what": {"reference": f"Subscription/{sid}"}}]}
        if consent_id:
            prov["entity"].append({"role": "source", "what": {"reference": f"Consent/{consent_id}"}})
        self.repo.create(tx, prov, rid=str(uuid.uuid4()), validated=True)


def unchanged(tx: Transaction, sub: Stored) -> bool:
    """Whether `sub` is still the live version of its Subscription, read again in the writing transaction."""
    current = tx.read("Subscription", sub.id)
    return current is not None and not current.deleted and current.version == sub.version


def _instant(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")
