"""How EHRs manage their Subscriptions: validation, the write-only secret, handshake, and the operations
$topic-list, $status, $events and $resend (HL7 Subscriptions R5 Backport IG, R4 profile)."""
from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from services.aftercare import notifications
from services.aftercare.delivery import counter_key, secret_key
from services.aftercare.subscriptions import (
    CONTENTS,
    HMAC_SECRET,
    RECIPIENT,
    parse_subscription,
    recipient_of,
    topic_list_parameters,
)
from shared.auth import current_principal
from shared.fhir.interactions import FhirApi
from shared.fhir.numbers import MAX_NUMBER, parse_int
from shared.fhir.operations import NUMBER_TYPES
from shared.fhir.operations import OperationParameter as P
from shared.fhir.outcome import FhirError
from shared.fhir.store import Stored, Transaction
from shared.fhir.util import now_instant
from shared.fhir.validation import ID_PATTERN

_pending_secret: ContextVar[str | None] = ContextVar("pending_secret", default=None)
NUMBERED = ("queued", "delivered", "blocked-consent")
MAX_LISTED = 1000  # Subscriptions one type-level $status lists when no id narrows it
# The operations' `in` parameters (Backport IG 1.1.0); event numbers come as strings or integers.
RESEND = (P("eventsSinceNumber", NUMBER_TYPES), P("eventsUntilNumber", NUMBER_TYPES))
EVENTS = (*RESEND, P("content", ("valueCode",)))
STATUSES = (P("id", ("valueString", "valueId"), max=None), P("status", ("valueCode",), max=None))


def check_subscription(tx: Transaction, sub: dict, previous: Stored | None) -> None:
    """Refuse what the IG would not accept; keep the HMAC secret out of the stored resource."""
    bind_recipient(sub, previous)
    spec = parse_subscription(sub)
    if isinstance(spec, list):
        raise FhirError(422, spec)
    channel = sub.get("channel") or {}
    secret = next((e.get("valueString") for e in channel.get("extension", []) if e.get("url") == HMAC_SECRET), None)
    if secret is not None:
        channel["extension"] = [e for e in channel["extension"] if e.get("url") != HMAC_SECRET]
        if not channel["extension"]:
            del channel["extension"]
    _pending_secret.set(secret)
    if previous is None:
        sub["status"] = "requested"  # active only once the endpoint answers the handshake


def bind_recipient(sub: dict, previous: Stored | None) -> None:
    """A client whose token names its organisation subscribes for that organisation only.

    The recipient is who the Part 2 consent gate checks: a client must not name another organisation
    that a patient consented to, nor take over its Subscription. Without a recipient, the caller's
    organisation is filled in. Clients without the claim (operators registering an EHR) name it themselves.
    """
    own = _own_organization()
    if own is None:
        return
    if previous is not None:
        check_owner(previous)
    named = recipient_of(sub)
    if named is None:
        value = ({"identifier": dict(zip(("system", "value"), own.split("|", 1), strict=True))} if "|" in own
                 else {"reference": own})
        sub.setdefault("extension", []).append({"url": RECIPIENT, "valueReference": value})
    elif named != own:
        raise FhirError.single(403, f"a client may subscribe for its own organisation ({own}) only, not {named}",
                               code="forbidden", expression="Subscription.extension")


def check_owner(current: Stored) -> None:
    """A client bound to an organisation changes or deletes that organisation's Subscriptions only."""
    own = _own_organization()
    if own is not None and recipient_of(current.resource) not in (None, own):
        raise FhirError.single(403, "this Subscription belongs to another organisation", code="forbidden")


def _own_organization() -> str | None:
    principal = current_principal.get()
    return principal.organization if principal is not None else None


def after_subscription(tx: Transaction, stored: Stored, previous: Stored | None) -> None:
    secret = _pending_secret.get()
    if secret is not None:
        tx.put_value(secret_key(stored.id), secret)
        _pending_secret.set(None)
    back_to_requested = previous is not None and previous.resource.get("status") != "requested" \
        and stored.resource.get("status") == "requested"
    if previous is None or back_to_requested:  # a new handshake, also to resume a subscription in error
        tx.enqueue(f"sub:{stored.id}", {"kind": "handshake"})


def _sub(api: FhirApi, rid: str | None) -> tuple[Stored, Any]:
    sub = api.store.read("Subscription", rid or "")
    if sub is None or sub.deleted:
        raise FhirError.single(404, f"Subscription/{rid} is not known", code="not-found")
    check_owner(sub)  # $status, $events and $resend show what was sent to that organisation
    spec = parse_subscription(sub.resource)
    if isinstance(spec, list):
        raise FhirError(422, spec)
    return sub, spec


def _number(args: dict[str, str], name: str, default: int) -> int:
    raw = args.get(name)
    return default if raw is None else parse_int(raw, name, 0, MAX_NUMBER)


def _args(args: list[tuple[str, str]], body: dict | None) -> dict[str, str]:
    """The operation's parameters by name, from the query and the (checked) Parameters body."""
    out = dict(args)
    for p in (body or {}).get("parameter", []):
        value = next(v for k, v in p.items() if k.startswith("value"))  # check_body: exactly one value each
        out[p["name"]] = value if isinstance(value, str) else str(value)
    return out


def topic_list(**_: Any) -> tuple[int, dict]:
    return 200, topic_list_parameters()


def _status_parameters(api: FhirApi, sub: Stored, spec: Any) -> dict:
    count = int(api.store.get_value(counter_key(sub.id)) or 0)
    errors = [("no-response", sub.resource["error"])] if sub.resource.get("error") else []
    return notifications.status_parameters(sub.id, spec.topic.url, sub.resource["status"], "query-status", count,
                                           api.base, content=spec.content, errors=errors)


def status(api: FhirApi, rid: str | None, **_: Any) -> tuple[int, dict]:
    sub, spec = _sub(api, rid)
    return 200, notifications.status_search_bundle([_status_parameters(api, sub, spec)])


def statuses(api: FhirApi, args: list[tuple[str, str]], body: dict | None = None, **_: Any) -> tuple[int, dict]:
    """`Subscription/$status?id=a&id=b` (ids may also be comma-separated, or none for every Subscription the
    caller may see), optionally narrowed by `status`: each named one as the instance form answers it."""
    given = [*args, *((p["name"], p[next(k for k in p if k.startswith("value"))])
                      for p in (body or {}).get("parameter", []))]
    ids = [i for name, raw in given if name == "id" for i in raw.split(",") if i]
    wanted = {s for name, raw in given if name == "status" for s in raw.split(",") if s}
    if any(not ID_PATTERN.fullmatch(rid) for rid in ids):
        raise FhirError.single(400, "id must name Subscriptions by their logical ids", expression="id")
    if ids:
        found = [_sub(api, rid) for rid in dict.fromkeys(ids)]
    else:
        every = api.store.search("Subscription", [], "r.created_seq", MAX_LISTED, 0).items
        found = [pair for stored in every if (pair := _own(stored)) is not None]
    params = [_status_parameters(api, sub, spec) for sub, spec in found
              if not wanted or sub.resource.get("status") in wanted]
    return 200, notifications.status_search_bundle(params)


def _own(sub: Stored) -> tuple[Stored, Any] | None:
    """A Subscription with its spec, when the caller may see its status (its own organisation's, or any for
    a client bound to none) and it is valid; else None."""
    own = _own_organization()
    spec = parse_subscription(sub.resource)
    if (own is not None and recipient_of(sub.resource) not in (None, own)) or isinstance(spec, list):
        return None
    return sub, spec


def events(api: FhirApi, rid: str | None, args: list[tuple[str, str]], body: dict | None = None,
           **_: Any) -> tuple[int, dict]:
    """Replay by event number from the stored history: eventsSinceNumber, eventsUntilNumber (inclusive)."""
    sub, spec = _sub(api, rid)
    params = _args(args, body)
    count = int(api.store.get_value(counter_key(sub.id)) or 0)
    since, until = _number(params, "eventsSinceNumber", 1), _number(params, "eventsUntilNumber", count)
    items = [i for i in api.store.work(f"sub:{sub.id}", NUMBERED, 10000, (since, until)) if i.number]
    found = [notifications.NotificationEvent(i.number, i.body["time"], i.body["focus"], tuple(i.body["resources"]),
                                             i.body.get("source_base")) for i in sorted(items, key=lambda i: i.number)]
    if "content" in params:
        if params["content"] not in CONTENTS:
            raise FhirError.single(400, f"content must be one of {', '.join(CONTENTS)}", expression="content")
        spec = type(spec)(**{**spec.__dict__, "content": params["content"]})
    return 200, notifications.notification_bundle(spec, sub.id, sub.resource["status"], "query-event", found, count,
                                                  api.base)


def resend(api: FhirApi, rid: str | None, args: list[tuple[str, str]], body: dict | None = None,
           **_: Any) -> tuple[int, dict]:
    """Send the numbered events again (eventsSinceNumber..eventsUntilNumber), keeping their numbers."""
    sub, _spec = _sub(api, rid)
    params = _args(args, body)
    count = int(api.store.get_value(counter_key(sub.id)) or 0)
    since, until = _number(params, "eventsSinceNumber", 1), _number(params, "eventsUntilNumber", count)
    with api.store.transaction() as tx:
        items = [i for i in api.store.work(f"sub:{sub.id}", ("delivered",), 10000, (since, until))]
        for item in items:
            tx.update_work(item.seq, "queued", 0, now_instant())
    return 200, {"resourceType": "Parameters", "parameter": [{"name": "requeued", "valueInteger": len(items)}]}
