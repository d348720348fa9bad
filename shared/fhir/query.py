"""From a search request's parameters to store conditions, order and paging."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from shared.fhir.dates import date_range
from shared.fhir.elements import SUMMARY_MODES, parse_elements
from shared.fhir.grants import require
from shared.fhir.includes import Include, parse_include, searchable, targets_of
from shared.fhir.numbers import parse_int
from shared.fhir.outcome import FhirError, Issue
from shared.fhir.paging import ORDERS, Cursor, decode
from shared.fhir.partners import PARTNER_TAG
from shared.fhir.patients import patient_where
from shared.fhir.registry import TAG_PARAM, Registry, ResourceDef
from shared.fhir.search import chain_condition, condition, date_bounds, date_sql, has_condition

MAX_COUNT = 1000
MAX_OFFSET = 10**9
DEFAULT_COUNT = 50
COUNT_BOUND = 1000  # Bundle.total unless _total=accurate: exact up to this many matches, left out past it
CONTROL = {"_format", "_pretty"}
TOTALS = ("none", "estimate", "accurate")
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
    includes: list[Include] = field(default_factory=list)
    summary: str | None = None
    elements: frozenset[str] | None = None
    total: str | None = None  # _total as asked: none, estimate, accurate (None: not asked)
    keyset: str | None = "created"  # the order by which pages follow one another by key (paging.ORDERS)
    cursor: Cursor | None = None
    by_offset: bool = False  # the client sent _offset: its pages follow by offset

    @property
    def counting(self) -> bool | int:
        """What the store counts: every match (accurate), none, or, unless asked, up to COUNT_BOUND matches, so
        that no page of a large result pays for a full count. A search for no resources (_count=0,
        _summary=count) asks for the total itself."""
        if self.total is None and self.count == 0:
            return True
        return {"accurate": True, "none": False}.get(self.total or "", COUNT_BOUND)


@dataclass
class HistoryQuery:
    since: str | None = None  # UTC instant, as the store compares it
    used: list[tuple[str, str]] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    offset: int = 0


def _int_param(name: str, raw: str, low: int, high: int) -> int:
    return parse_int(raw, name, low, high, cap=True)


def _sort_clause(rdef: ResourceDef, raw: str) -> tuple[str, str | None]:
    """The ORDER BY of `_sort`, and the keyset order that pages it (None: it pages by offset)."""
    if raw in ("_lastUpdated", "-_lastUpdated"):
        order = "-updated" if raw.startswith("-") else "updated"
        return ORDERS[order][0], order
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
    return ", ".join([*keys, "r.created_seq ASC"]), None


def _unsupported(key: str, message: str) -> FhirError:
    return FhirError(400, [Issue(f"{key}: {message}", code="not-supported", expression=key)])


def _confined(rdef: ResourceDef) -> list[tuple[str, list]]:
    """The condition confining a referral partner to its own resources of a type it searches indirectly."""
    partner = rdef.confined_to("s")
    return [*([condition(TAG_PARAM, "", f"{PARTNER_TAG}|{partner}")] if partner else []),
            *patient_where(rdef, "search")]


def _criterion(rdef: ResourceDef, name: str, modifier: str, raw: str, why: str) -> tuple[str, list]:
    """One criterion on another type reached by a chain or `_has`: scope and partner rules apply to it too."""
    require(rdef.type, "s", why)
    if name == "_id":
        ids = [i for i in raw.split(",") if i] or [""]
        return "r.id IN (" + ",".join("?" * len(ids)) + ")", ids
    param = rdef.param(name)
    if param is None or name.startswith("_has") or "." in name:
        raise _unsupported(why, f"{rdef.type} has no search parameter {name[:40]} here (one level is supported)")
    return condition(param, modifier, raw)


def chained(registry: Registry, rdef: ResourceDef, key: str, raw: str) -> tuple[str, list]:
    """`subject:Patient.identifier=...`: one level of chaining, to the types this service holds."""
    head, _, rest = key.partition(".")
    name, _, target = head.partition(":")
    param = rdef.param(name)
    if param is None or param.kind != "reference":
        raise _unsupported(key, f"{name[:40]} is not a reference parameter of {rdef.type}")
    chained_name, _, chained_modifier = rest.partition(":")
    candidates = [t for t in targets_of(registry, rdef, param, target or None)
                  if chained_name == "_id" or registry.types[t].param(chained_name) is not None]
    if not candidates:
        raise _unsupported(key, "no type held by this service has that parameter to chain to")
    # Without a type named, a type the caller may not search is no candidate; named, or alone, it is refused.
    allowed = [t for t in candidates if searchable(registry, t)] if not target else candidates
    targets = [(t, [_criterion(registry.types[t], chained_name, chained_modifier, raw, key),
                    *_confined(registry.types[t])]) for t in (allowed or candidates[:1])]
    return chain_condition(param.name, targets)


def reverse_chained(registry: Registry, rdef: ResourceDef, key: str, raw: str) -> tuple[str, list]:
    """`_has:Observation:subject:code=...`: some Observation held here whose subject is this resource has that
    code. One level: a `_has` inside a `_has` is not supported."""
    parts = key.split(":")
    if len(parts) not in (4, 5):
        raise _unsupported(key, "give _has:Type:reference:parameter (one level)")
    source = registry.types.get(parts[1])
    reference = source.param(parts[2]) if source else None
    if source is None or reference is None or reference.kind != "reference":
        raise _unsupported(key, "names no reference parameter of a type served here")
    where = [_criterion(source, parts[3], parts[4] if len(parts) == 5 else "", raw, key), *_confined(source)]
    return has_condition(source.type, reference.name, where)


def _control(q: Query, rdef: ResourceDef, registry: Registry | None, key: str, raw: str, strict: bool) -> bool:
    """The result parameters: _include, _revinclude, _summary, _elements, _total. False for any other key."""
    name = key.partition(":")[0]
    if name in ("_include", "_revinclude"):
        if registry is None:
            raise _unsupported(key, "not supported here")
        if (inc := parse_include(registry, rdef.type, key, raw, strict)) is not None:
            q.includes.append(inc)
            q.used.append((key, raw))
    elif name == "_summary":
        if raw not in SUMMARY_MODES:
            raise FhirError(400, [Issue(f"_summary takes {', '.join(SUMMARY_MODES)}", expression="_summary")])
        q.summary = raw
        q.used.append((key, raw))
    elif name == "_elements":
        q.elements = parse_elements(raw, rdef.type)
        q.used.append((key, raw))
    elif name == "_total":
        if raw not in TOTALS:
            raise FhirError(400, [Issue(f"_total takes {', '.join(TOTALS)}", expression="_total")])
        q.total = raw
        q.used.append((key, raw))
    else:
        return False
    return True


def _combinations(q: Query, strict: bool) -> None:
    """What cannot be asked together: refused under strict handling, otherwise settled as documented."""
    if q.summary is not None and q.elements is not None:
        if strict:
            raise _unsupported("_elements", "_summary and _elements cannot be used together")
        q.summary = None  # the more precise of the two wins
    if q.summary == "count":
        if strict and q.includes:
            raise _unsupported("_include", "_summary=count returns no resources to include from")
        q.count, q.includes = 0, []


def _criteria(q: Query, rdef: ResourceDef, registry: Registry | None, key: str, raw: str) -> bool:
    """A chained or reverse-chained criterion; False for a key that is neither."""
    if key.startswith("_has:"):
        builder = reverse_chained
    elif "." in key and not key.startswith("_"):
        builder = chained
    else:
        return False
    if registry is None:
        raise _unsupported(key, "not supported here")
    _bounded(q, key, raw)
    q.where.append(builder(registry, rdef, key, raw))
    q.used.append((key, raw))
    return True


def parse_query(rdef: ResourceDef, items: list[tuple[str, str]], strict: bool,
                registry: Registry | None = None) -> Query:
    """`registry`: what chains, `_has` and includes may reach (none without it)."""
    q = Query()
    cursor_raw: str | None = None
    for key, raw in items:
        name, _, modifier = key.partition(":")
        if name == "_count":
            q.count = _int_param("_count", raw, 0, MAX_COUNT)
        elif name == "_offset":
            q.offset = _int_param("_offset", raw, 0, MAX_OFFSET)
            q.by_offset = True
        elif name == "_cursor":
            cursor_raw = raw
        elif name == "_sort":
            _bounded(q, name, raw)
            q.order, q.keyset = _sort_clause(rdef, raw)
            q.used.append((key, raw))
        elif name in CONTROL:
            continue
        elif _control(q, rdef, registry, key, raw, strict):
            continue
        elif _lenient(strict, lambda key=key, raw=raw: _criteria(q, rdef, registry, key, raw)):
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
    _combinations(q, strict)
    if q.by_offset or q.keyset is None:
        q.keyset = None  # offset paging: a cursor, had one been sent with it, has no order to follow
    if cursor_raw is not None:
        q.cursor = decode(cursor_raw, q.keyset)
    return q


def _lenient(strict: bool, attempt: Callable[[], bool]) -> bool:
    """Run a criterion's parse; one this server cannot follow (400 not-supported) is ignored unless strict."""
    try:
        return attempt()
    except FhirError as exc:
        if strict or exc.status != 400 or any(i.code != "not-supported" for i in exc.issues):
            raise
        return True


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
