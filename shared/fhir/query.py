"""From a search request's parameters to store conditions, order and paging."""
from __future__ import annotations

from dataclasses import dataclass, field

from shared.fhir.dates import date_range
from shared.fhir.numbers import parse_int
from shared.fhir.outcome import FhirError, Issue
from shared.fhir.registry import ResourceDef
from shared.fhir.search import condition, date_bounds, date_sql

MAX_COUNT = 1000
MAX_OFFSET = 10**9
DEFAULT_COUNT = 50
CONTROL = {"_count", "_offset", "_sort", "_format", "_pretty", "_summary", "_total", "_elements"}
HISTORY_CONTROL = {"_format", "_pretty", "_summary", "_elements"}  # accepted, shape nothing here
# What one search may ask of SQLite, whose expression trees stop at a depth of 1000: a client needing more
# searches in pages of criteria.
MAX_CRITERIA, MAX_ALTERNATIVES, MAX_IDS, MAX_SORT_KEYS = 64, 100, 1000, 8


def _too_costly(message: str, expression: str) -> FhirError:
    return FhirError(400, [Issue(message, code="too-costly", expression=expression)])


def _bounded(q: Query, key: str, raw: str) -> None:
    """Refuse a search too large to run: too many criteria, or too many values in one."""
    if len(q.where) >= MAX_CRITERIA:
        raise _too_costly(f"a search takes at most {MAX_CRITERIA} criteria", key)
    limit = MAX_IDS if key == "_id" else MAX_SORT_KEYS if key == "_sort" else MAX_ALTERNATIVES
    if raw.count(",") >= limit:
        raise _too_costly(f"{key} takes at most {limit} comma-separated values", key)


@dataclass
class Query:
    where: list[tuple[str, list]] = field(default_factory=list)
    used: list[tuple[str, str]] = field(default_factory=list)  # what the self link repeats
    order: str = "r.created_seq"
    count: int = DEFAULT_COUNT
    offset: int = 0


@dataclass
class HistoryQuery:
    since: str | None = None  # UTC instant, as the store compares it
    used: list[tuple[str, str]] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    offset: int = 0


def _int_param(name: str, raw: str, low: int, high: int) -> int:
    return parse_int(raw, name, low, high, cap=True)


def _sort_clause(rdef: ResourceDef, raw: str) -> str:
    keys = []
    for key in raw.split(","):
        descending = key.startswith("-")
        name = key.lstrip("-")
        direction = "DESC" if descending else "ASC"
        if name == "_lastUpdated":
            keys.append(f"r.last_updated {direction}")
        elif (p := rdef.param(name)) is not None and p.kind == "date":
            keys.append(f"(SELECT min(s.date_lo) FROM search_index s WHERE s.type=r.type AND s.id=r.id "
                        f"AND s.param='{p.name}') {direction}")
        else:
            raise FhirError(400, [Issue(f"_sort on {name} is not supported; use _lastUpdated or a date "
                                        f"parameter", code="not-supported", expression="_sort")])
    return ", ".join([*keys, "r.created_seq ASC"])


def parse_query(rdef: ResourceDef, items: list[tuple[str, str]], strict: bool) -> Query:
    q = Query()
    for key, raw in items:
        name, _, modifier = key.partition(":")
        if name == "_count":
            q.count = _int_param("_count", raw, 0, MAX_COUNT)
        elif name == "_offset":
            q.offset = _int_param("_offset", raw, 0, MAX_OFFSET)
        elif name == "_sort":
            _bounded(q, name, raw)
            q.order = _sort_clause(rdef, raw)
            q.used.append((key, raw))
        elif name in CONTROL:
            continue
        elif name in ("_id", "_lastUpdated") and modifier:
            raise FhirError(400, [Issue(f"search parameter {name} takes no modifier here", code="not-supported",
                                        expression=key)])
        elif name == "_id":
            _bounded(q, name, raw)
            ids = [i for i in raw.split(",") if i]
            if not ids:
                raise FhirError(400, [Issue("search parameter _id: empty value", expression="_id")])
            q.where.append(("r.id IN (" + ",".join("?" * len(ids)) + ")", ids))
            q.used.append((key, raw))
        elif name == "_lastUpdated":
            _bounded(q, name, raw)
            prefix, lo, hi = date_bounds(name, raw)
            q.where.append(date_sql(prefix, lo, hi, "r.last_updated", "r.last_updated"))
            q.used.append((key, raw))
        elif (param := rdef.param(name)) is not None:
            _bounded(q, key, raw)
            q.where.append(condition(param, modifier, raw))
            q.used.append((key, raw))
        elif strict:
            raise FhirError(400, [Issue(f"unknown search parameter {name} for {rdef.type}", code="not-supported",
                                        expression=name)])
    return q


def parse_history(items: list[tuple[str, str]], strict: bool) -> HistoryQuery:
    """_count, _offset and _since of a history request; _at, _list and unknown parameters are not
    supported: ignored (and left out of the self link), or 400 under `Prefer: handling=strict`."""
    q = HistoryQuery()
    for name, raw in items:
        if name == "_count":
            q.count = _int_param("_count", raw, 0, MAX_COUNT)
        elif name == "_offset":
            q.offset = _int_param("_offset", raw, 0, MAX_OFFSET)
        elif name == "_since":
            bounds = date_range(raw)
            if bounds is None:
                raise FhirError(400, [Issue("_since must be a FHIR instant such as 2025-03-04T10:00:00Z",
                                            expression="_since")])
            q.since = bounds[0]  # compared as stored, so normalised to UTC milliseconds first
            q.used = [(k, v) for k, v in q.used if k != "_since"] + [(name, raw)]
        elif strict and name not in HISTORY_CONTROL:
            raise FhirError(400, [Issue(f"history parameter {name} is not supported here; use _since, _count "
                                        f"and _offset", code="not-supported", expression=name)])
    return q
