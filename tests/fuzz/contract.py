"""The contract every answer must keep, whatever was asked, and the tally `make fuzz` prints.

- never a 5xx (nothing the fuzzer sends is the server's fault, and every dependency is up), and never a redirect;
- every 4xx is a FHIR OperationOutcome served as application/fhir+json;
- a write the server refused stored nothing: no resource version, no outbox event, no queued work
  (the service's own AuditEvent of the attempt aside);
- a batch or transaction answered 200 has exactly one response entry per request entry.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import requests
from fhir.resources.R4B.operationoutcome import OperationOutcome
from pydantic import ValidationError

from shared.fhir.store import is_postgresql
from shared.fhir.store_pg import pg_sql

WRITES = {"POST", "PUT", "DELETE", "PATCH"}


@dataclass
class Sent:
    """One request as the fuzzer sent it."""

    service: str
    method: str
    path: str
    params: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    family: str = ""

    def summary(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.params)[:300]
        body = (self.body or b"")[:600].decode("utf-8", "replace")
        return f"{self.service} {self.method} {self.path[:300]}{'?' + query if query else ''} " \
               f"headers={self.headers} body={body}"

    def bundle_entries(self) -> int | None:
        """How many entries a posted batch or transaction holds, when the body is one."""
        if self.method != "POST" or self.path.rstrip("/") != "/fhir" or not self.body:
            return None
        try:
            doc = json.loads(self.body)
        except (ValueError, RecursionError):  # not JSON, or nested past what the client's parser takes
            return None
        if isinstance(doc, dict) and doc.get("type") in ("batch", "transaction") and isinstance(doc.get("entry"), list):
            return len(doc["entry"])
        return None


class StoreWatch:
    """What a service's store gained since a mark: read straight from its SQLite file (read-only) or its
    PostgreSQL database."""

    def __init__(self, store: Path | str) -> None:
        self.store = store
        self._conn: sqlite3.Connection | psycopg.Connection | None = None

    def conn(self) -> sqlite3.Connection | psycopg.Connection:
        if self._conn is None:
            if is_postgresql(self.store):
                self._conn = psycopg.connect(str(self.store), autocommit=True, connect_timeout=10)
            else:
                self._conn = sqlite3.connect(f"file:{self.store}?mode=ro", uri=True, timeout=30,
                                             check_same_thread=False)
        return self._conn

    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        c = self.conn()
        if isinstance(c, sqlite3.Connection):
            return c.execute(sql, args).fetchall()
        return c.execute(pg_sql(sql), args).fetchall()

    def mark(self) -> tuple[int, int, int]:
        return tuple(self._rows(f"SELECT coalesce(max(seq), 0) FROM {table}")[0][0]  # type: ignore[return-value]
                     for table in ("history", "outbox", "work_item"))

    def gained(self, mark: tuple[int, int, int]) -> list[str]:
        versions = self._rows("SELECT type, id, version FROM history WHERE seq > ? AND type != 'AuditEvent'",
                              (mark[0],))
        events = self._rows("SELECT count(*) FROM outbox WHERE seq > ?", (mark[1],))[0][0]
        work = self._rows("SELECT count(*) FROM work_item WHERE seq > ?", (mark[2],))[0][0]
        found = [f"stored {t}/{i} version {v}" for t, i, v in versions]
        found += [f"{events} outbox event(s)"] if events else []
        found += [f"{work} work item(s)"] if work else []
        return found


def _operation_outcome_problem(resp: requests.Response) -> str | None:
    if not resp.headers.get("Content-Type", "").startswith("application/fhir+json"):
        return f"a {resp.status_code} served as {resp.headers.get('Content-Type')!r}, not application/fhir+json"
    try:
        body = resp.json()
    except ValueError:
        return f"a {resp.status_code} whose body is not JSON"
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return f"a {resp.status_code} whose body is not an OperationOutcome"
    try:
        OperationOutcome.model_validate(body)
    except ValidationError as exc:
        return f"a {resp.status_code} whose OperationOutcome is not valid FHIR: {exc.errors()[:1]}"
    if not body.get("issue"):
        return f"a {resp.status_code} whose OperationOutcome has no issue"
    return None


def violations(sent: Sent, resp: requests.Response | None, gained: list[str], error: str | None = None) -> list[str]:
    """What this exchange broke of the contract (empty when it kept it)."""
    if resp is None:
        return [f"no answer: {error}"]
    found = []
    if resp.status_code >= 500:
        found.append(f"server error {resp.status_code}")
    elif 300 <= resp.status_code < 400:
        found.append(f"a redirect ({resp.status_code}) where a FHIR server answers")
    elif resp.status_code >= 400 and sent.method != "HEAD":
        problem = _operation_outcome_problem(resp)
        if problem:
            found.append(problem)
    refused = resp.status_code >= 400
    if refused and gained and sent.method in WRITES:
        found.append(f"refused with {resp.status_code} but the store gained: {', '.join(gained[:5])}")
    expected = sent.bundle_entries()
    if expected is not None and resp.status_code == 200:
        try:
            answered = len(resp.json().get("entry", []))
        except (ValueError, AttributeError):
            answered = -1
        if answered != expected:
            found.append(f"{expected} request entries answered by {answered} response entries")
    return found


@dataclass
class Tally:
    """Counts of every exchange and every violation, for the summary `make fuzz` prints."""

    statuses: Counter = field(default_factory=Counter)  # (service, status class) -> n
    families: Counter = field(default_factory=Counter)
    broken: list[tuple[str, str]] = field(default_factory=list)  # (violation, request summary)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def server_errors(self) -> int:
        return sum(n for (_, status), n in self.statuses.items() if status == "5xx")

    def record(self, sent: Sent, resp: requests.Response | None, found: list[str]) -> None:
        status = "no answer" if resp is None else f"{resp.status_code // 100}xx"
        with self.lock:
            self.statuses[(sent.service, status)] += 1
            self.families[sent.family] += 1
            self.broken += [(v, sent.summary()) for v in found]

    def render(self) -> str:
        services = sorted({s for s, _ in self.statuses})
        classes = sorted({c for _, c in self.statuses})
        lines = ["fuzz: requests by service and status class",
                 "  " + f"{'service':<12}" + "".join(f"{c:>10}" for c in classes) + f"{'total':>10}"]
        for s in services:
            row = [self.statuses[(s, c)] for c in classes]
            lines.append("  " + f"{s:<12}" + "".join(f"{n:>10}" for n in row) + f"{sum(row):>10}")
        lines.append(f"  requests: {self.requests}   server errors: {self.server_errors}   "
                     f"contract violations: {len(self.broken)}")
        lines.append("  by family: " + ", ".join(f"{f} {n}" for f, n in sorted(self.families.items())))
        kinds: dict[str, tuple[int, str]] = {}
        for violation, summary in self.broken:
            key = violation[:80]
            count, first = kinds.get(key, (0, summary))
            kinds[key] = (count + 1, first)
        for key, (count, first) in list(kinds.items())[:40]:
            lines.append(f"  VIOLATION x{count}: {key}\n    e.g. {first[:700]}")
        return "\n".join(lines)


class Target:
    """One running service: sends a request, checks the answer against the contract, tallies it."""

    def __init__(self, service: str, root: str, store: Path | str, token: str, tally: Tally,
                 strict: bool = True) -> None:
        self.service, self.root, self.tally, self.strict = service, root, tally, strict
        self.watch = StoreWatch(store)
        self.session = requests.Session()
        self.token = token

    def send(self, sent: Sent, auth: str | None = "default") -> tuple[requests.Response | None, list[str]]:
        headers: dict[str, str | bytes] = dict(sent.headers)
        if auth == "default":
            headers.setdefault("Authorization", f"Bearer {self.token}")
        elif auth is not None:
            headers["Authorization"] = auth
        # A value beyond latin-1 goes out as UTF-8 bytes, as a careless client would send it.
        headers = {k: v if isinstance(v, bytes) or v.isascii() else v.encode() for k, v in headers.items()}
        mark = self.watch.mark()
        resp, error = None, None
        try:
            params = [(k.encode("utf-8", "surrogatepass"), v.encode("utf-8", "surrogatepass")) for k, v in sent.params]
            resp = self.session.request(sent.method, self.root + sent.path, params=params, headers=headers,
                                        data=sent.body, timeout=60, allow_redirects=False)
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
            self.session = requests.Session()  # a dropped connection must not poison the next request
        gained = self.watch.gained(mark)
        found = violations(sent, resp, gained, error)
        self.tally.record(sent, resp, found)
        return resp, found

    def check(self, sent: Sent, auth: str | None = "default") -> requests.Response | None:
        """Send, and fail on any violation so that hypothesis shrinks the input; in a campaign (`strict` off) the
        violation is only tallied, and the campaign goes on to count them all."""
        resp, found = self.send(sent, auth)
        assert not (found and self.strict), f"{found}\n{sent.summary()}"
        return resp

    def json_of(self, resp: requests.Response | None) -> Any:
        try:
            return resp.json() if resp is not None else None
        except ValueError:
            return None
