"""The `iop` command: tail topics, inspect and replay dead letters, mint dev tokens, show status."""
from __future__ import annotations

import argparse
import json
import sys
import time

from kafka import KafkaConsumer

from shared.auth import PATIENT_ID, dev_secret, mint
from shared.config import Settings, kafka_bootstrap
from shared.events import dlq
from shared.events.catalogue import ALL_TOPICS


def _servers() -> str:
    return kafka_bootstrap()


def _headers(record_headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in (record_headers or [])}


def _describe(headers: dict[str, str], value: bytes | None) -> str:
    try:
        bundle = json.loads(value or b"")
        resources = [e["resource"] for e in bundle.get("entry", [])]
        focus = resources[0]
        focus_line = f"{focus.get('resourceType')}/{focus.get('id')} status={focus.get('status', '-')}"
        others = ", ".join(f"{r.get('resourceType')}/{r.get('id')}" for r in resources[1:]) or "-"
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        focus_line, others = "(value is not a FHIR Bundle)", "-"
    return (f"{headers.get('ce_time', '?')}  {headers.get('ce_type', '?')}  {headers.get('ce_subject', '?')}\n"
            f"    id={headers.get('ce_id', '?')}  source={headers.get('ce_source', '?')}\n"
            f"    focus: {focus_line}\n    with: {others}")


def events_tail(args: argparse.Namespace) -> int:
    consumer = KafkaConsumer(args.topic, bootstrap_servers=_servers(), group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest" if args.from_beginning else "latest")
    deadline = time.monotonic() + args.seconds if args.seconds else None
    seen = 0
    try:
        while deadline is None or time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    print(f"[{r.topic}/{r.partition}@{r.offset} key={(r.key or b'').decode()}] "
                          + _describe(_headers(r.headers), r.value), flush=True)
                    seen += 1
                    if args.max and seen >= args.max:
                        return 0
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def dlq_list(args: argparse.Namespace) -> int:
    letters = dlq.dead_letters(_servers(), args.topic)
    for d in letters:
        print(f"{d.header('dlq_failed_at')}  kind={d.kind}  {d.header('ce_type') or '?'}  id={d.ce_id or '?'}  "
              f"from {d.header('dlq_original_topic')}/{d.header('dlq_original_partition')}"
              f"@{d.header('dlq_original_offset')}  group={d.header('dlq_consumer_group')}\n"
              f"    reason: {d.header('dlq_error')}")
    print(f"{len(letters)} dead letter(s) in {args.topic.removesuffix('.dlq')}.dlq")
    return 0


def dlq_replay(args: argparse.Namespace) -> int:
    count = dlq.replay(_servers(), args.topic, args.id)
    print(f"replayed {count} record(s) to {args.topic.removesuffix('.dlq')}")
    return 0 if count or args.id is None else 1


def token(args: argparse.Namespace) -> int:
    """Mint a development token with the secret the local services use (never for production)."""
    settings = Settings("cli")
    secret = settings.auth_hs256_secret or dev_secret(settings.var_dir)
    if args.patient and not PATIENT_ID.fullmatch(args.patient.removeprefix("Patient/")):
        print("iop token: --patient must be Patient/id", file=sys.stderr)
        return 2
    print(mint(secret, args.scope, settings.auth_issuer, settings.auth_audience, args.sub, args.partner, args.ttl,
               organization=args.organization, patient=args.patient))
    return 0


def status(args: argparse.Namespace) -> int:
    from shared import status as suite_status

    found = suite_status.collect()
    print(suite_status.render(found))
    return 0 if suite_status.healthy(found) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iop", description="Operate the iop-suite from the command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    events = sub.add_parser("events", help="read event topics").add_subparsers(dest="action", required=True)
    tail = events.add_parser("tail", help="print events as they arrive: headers and focus resource")
    tail.add_argument("topic", choices=ALL_TOPICS)
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--max", type=int, default=0, help="stop after this many events")
    tail.add_argument("--seconds", type=float, default=0, help="stop after this many seconds")
    tail.set_defaults(func=events_tail)
    dead = sub.add_parser("dlq", help="dead-letter topics").add_subparsers(dest="action", required=True)
    lst = dead.add_parser("list", help="list what a consumer could not process, with the reason")
    lst.add_argument("topic")
    lst.set_defaults(func=dlq_list)
    rep = dead.add_parser("replay", help="send dead letters back to their topic once the cause is fixed")
    rep.add_argument("topic")
    rep.add_argument("--id", help="only the event with this ce_id")
    rep.set_defaults(func=dlq_replay)
    tok = sub.add_parser("token", help="mint a development Bearer token (HS256, the local dev secret)")
    tok.add_argument("--scope", default="system/*.cruds", help="SMART scopes, space separated")
    tok.add_argument("--sub", default="dev", help="the subject (who is calling)")
    tok.add_argument("--partner", help="confine the token to one referral partner's submissions")
    tok.add_argument("--organization", help="the client's organisation (Organization/x or system|value): its "
                     "Subscriptions may name no other recipient")
    tok.add_argument("--patient", help="bind the token to one patient (Patient/x): patient/ scopes then grant, "
                     "within that patient's compartment only")
    tok.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    tok.set_defaults(func=token)
    sub.add_parser("status", help="every replica, services, broker, consumer members and lag, DLQ sizes, EHR "
                   "subscriptions in error"
                   ).set_defaults(func=status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
