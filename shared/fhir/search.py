"""Search parameters: what is indexed from a resource, and how a query becomes SQL.

A parameter is (name, kind, paths). Paths are dotted element names; `a|b` lists the
alternatives of a choice element (effectiveDateTime|effectivePeriod).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.fhir.bindings import R4_RESOURCE_TYPES
from shared.fhir.dates import date_range
from shared.fhir.outcome import FhirError, Issue
from shared.fhir.store import IndexRow

KINDS = {"token", "reference", "date", "string"}
DATE_PREFIXES = ("eq", "ne", "lt", "le", "gt", "ge", "sa", "eb")


@dataclass(frozen=True)
class SearchParam:
    name: str
    kind: str
    path: str
    doc: str = ""


def _walk(node: Any, parts: list[str]) -> list[Any]:
    if not parts:
        return node if isinstance(node, list) else [node]
    if isinstance(node, list):
        return [v for item in node for v in _walk(item, parts)]
    if not isinstance(node, dict):
        return []
    out: list[Any] = []
    for alternative in parts[0].split("|"):
        if alternative in node:
            out.extend(_walk(node[alternative], parts[1:]))
    return out


def values_at(resource: dict, path: str) -> list[Any]:
    return _walk(resource, path.split("."))


def _token_rows(name: str, value: Any) -> list[IndexRow]:
    if isinstance(value, bool):
        return [IndexRow(name, None, str(value).lower())]
    if isinstance(value, str):
        return [IndexRow(name, None, value)]
    if not isinstance(value, dict):
        return []
    if "coding" in value:
        return [r for c in value["coding"] for r in _token_rows(name, c)]
    if "code" in value:
        return [IndexRow(name, value.get("system"), value["code"])]
    if "value" in value and isinstance(value["value"], str):  # Identifier
        return [IndexRow(name, value.get("system"), value["value"])]
    return []


def _string_values(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):  # HumanName, Address, CodeableConcept text
        parts = [value.get("text"), value.get("family"), *value.get("given", []), *value.get("line", []),
                 value.get("city"), value.get("display")]
        return [p for p in parts if isinstance(p, str)]
    return []


def _date_row(name: str, value: Any) -> IndexRow | None:
    if isinstance(value, str):
        rng = date_range(value)
        return IndexRow(name, date_lo=rng[0], date_hi=rng[1]) if rng else None
    if isinstance(value, dict) and ("start" in value or "end" in value):
        lo = date_range(value["start"]) if "start" in value else None
        hi = date_range(value["end"]) if "end" in value else None
        return IndexRow(name, date_lo=lo[0] if lo else "0000", date_hi=hi[1] if hi else "9999")
    return None


def index_rows(resource: dict, params: list[SearchParam]) -> list[IndexRow]:
    rows: list[IndexRow] = []
    for p in params:
        for value in values_at(resource, p.path):
            if p.kind == "token":
                rows.extend(_token_rows(p.name, value))
            elif p.kind == "reference" and isinstance(value, dict) and isinstance(value.get("reference"), str):
                rows.append(IndexRow(p.name, None, value["reference"].split("/_history/")[0]))
            elif p.kind == "string":
                rows.extend(IndexRow(p.name, None, s.lower()) for s in _string_values(value))
            elif p.kind == "date" and (row := _date_row(p.name, value)):
                rows.append(row)
    return rows


def _bad(param: str, message: str) -> FhirError:
    return FhirError(400, [Issue(f"search parameter {param}: {message}", code="invalid", expression=param)])


_SUB = "EXISTS (SELECT 1 FROM search_index s WHERE s.type=r.type AND s.id=r.id AND s.param=? AND "
_DRIVING = "r.id IN (SELECT s.id FROM search_index s WHERE s.type=? AND s.param=? AND "


class Criterion(tuple):
    """A condition on the search index: `(sql, args)` like every condition (a per-row EXISTS on `r`), which a
    store may instead run as the search's driving set, `r.id IN (SELECT s.id …)` for one type. `selective`: the
    criterion names a few resources (a reference, an identifier), so fetching its ids first beats a scan."""

    selective: bool

    def __new__(cls, body: str, args: list, selective: bool = False) -> Criterion:
        self = super().__new__(cls, (_SUB + body + ")", args))
        self.selective = selective
        return self

    def driving(self, rtype: str) -> tuple[str, list]:
        """The same criterion as the set of ids of `rtype` that meet it."""
        return _DRIVING + self[0][len(_SUB):], [rtype, *self[1]]



def token_condition(name: str, raw: str) -> tuple[str, list]:
    alternatives, args = [], [name]
    for value in raw.split(","):
        if "|" in value:
            system, code = value.split("|", 1)
            if system and code:
                alternatives.append("(s.system=? AND s.value=?)")
                args += [system, code]
            elif code:
                alternatives.append("(s.system IS NULL AND s.value=?)")
                args.append(code)
            else:
                alternatives.append("s.system=?")
                args.append(system)
        else:
            alternatives.append("s.value=?")
            args.append(value)
    return Criterion("(" + " OR ".join(alternatives) + ")", args, selective=name == "identifier")


def reference_condition(name: str, raw: str, target: str | None) -> tuple[str, list]:
    alternatives, args = [], [name]
    for value in raw.split(","):
        if "/" in value:
            alternatives.append("s.value=?")
            args.append(value.rsplit("/", 2)[-2] + "/" + value.rsplit("/", 1)[-1] if "://" in value else value)
        elif target:
            alternatives.append("s.value=?")
            args.append(f"{target}/{value}")
        else:  # a bare id, of any type: the value ends in `/id`, compared as it is (ids are case-sensitive)
            alternatives.append("substr(s.value, length(s.value) - ?) = ?")
            args += [len(value), "/" + value]
    exact = all(a == "s.value=?" for a in alternatives)  # a bare id of any type is no index lookup
    return Criterion("(" + " OR ".join(alternatives) + ")", args, selective=exact)


def string_condition(name: str, raw: str, modifier: str) -> tuple[str, list]:
    alternatives, args = [], [name]
    for value in raw.split(","):
        v = value.lower()
        if modifier == "exact":
            alternatives.append("s.value=?")
            args.append(v)
        else:
            alternatives.append("s.value LIKE ? ESCAPE '\\'")
            escaped = v.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            args.append(("%" if modifier == "contains" else "") + escaped + "%")
    return Criterion("(" + " OR ".join(alternatives) + ")", args)


def date_bounds(param: str, raw: str) -> tuple[str, str, str]:
    prefix = raw[:2] if raw[:2] in DATE_PREFIXES else "eq"
    value = raw[2:] if raw[:2] in DATE_PREFIXES else raw
    rng = date_range(value)
    if rng is None:
        raise _bad(param, "not a FHIR date (YYYY, YYYY-MM, YYYY-MM-DD or a dateTime)")
    return prefix, rng[0], rng[1]


DATE_SQL = {"eq": "({lo}>=? AND {hi}<=?)", "ne": "NOT ({lo}>=? AND {hi}<=?)", "lt": "{lo}<?",
            "le": "{lo}<=?", "gt": "{hi}>?", "ge": "{hi}>=?", "sa": "{lo}>?", "eb": "{hi}<?"}


def date_sql(prefix: str, lo: str, hi: str, lo_col: str, hi_col: str) -> tuple[str, list]:
    sql = DATE_SQL[prefix].format(lo=lo_col, hi=hi_col)
    arg_for = {"eq": [lo, hi], "ne": [lo, hi], "lt": [lo], "le": [hi], "gt": [hi], "ge": [lo], "sa": [hi],
               "eb": [lo]}
    return sql, arg_for[prefix]


def date_condition(name: str, raw: str) -> tuple[str, list]:
    prefix, lo, hi = date_bounds(name, raw)
    sql, args = date_sql(prefix, lo, hi, "s.date_lo", "s.date_hi")
    return Criterion(sql, [name, *args])


MODIFIERS = {"token": {""}, "reference": {""}, "string": {"", "exact", "contains"}, "date": {""}}


def _check_modifier(param: SearchParam, modifier: str) -> None:
    """FHIR: a server SHALL reject a modifier it does not support, rather than search without it."""
    allowed = MODIFIERS[param.kind] | {"missing"}
    if modifier in allowed or (param.kind == "reference" and modifier in R4_RESOURCE_TYPES):
        return
    raise FhirError(400, [Issue(f"search parameter {param.name}: the modifier :{_printable(modifier)} is not "
                                f"supported here", code="not-supported", expression=f"{param.name}:{modifier}")])


def _printable(text: str) -> str:
    return text if len(text) <= 32 else text[:32] + "..."


def reference_in(name: str, references: list[str]) -> tuple[str, list]:
    """Resources whose reference parameter `name` names one of `references` (`Type/id`): one flat IN list,
    which no expression depth limit meets however many there are."""
    return Criterion("s.value IN (" + ",".join("?" * len(references)) + ")", [name, *references], selective=True)


def _matching(rtype: str, where: list[tuple[str, list]]) -> tuple[str, list]:
    """SELECT of the live resources of `rtype` meeting `where`. Its alias `r` shadows the outer query's `r`, so
    the conditions built for a search (which name `r`) apply to these resources unchanged."""
    clause = " AND ".join(["r.type=?", "r.deleted=0", *(w for w, _ in where)])
    return f"FROM resource r WHERE {clause}", [rtype, *(a for _, args in where for a in args)]


def chain_condition(name: str, targets: list[tuple[str, list[tuple[str, list]]]]) -> tuple[str, list]:
    """A chained parameter (`subject:Patient.identifier=...`): the reference `name` names a resource of one of the
    target types that meets that type's conditions. Portable SQL: `||` concatenates in SQLite and PostgreSQL."""
    alternatives, args = [], [name]
    for rtype, where in targets:
        sql, sql_args = _matching(rtype, where)
        alternatives.append(f"s.value IN (SELECT r.type || '/' || r.id {sql})")
        args += sql_args
    return Criterion("(" + " OR ".join(alternatives) + ")", args)


def has_condition(source: str, name: str, where: list[tuple[str, list]]) -> tuple[str, list]:
    """Reverse chaining (`_has:Observation:subject:code=...`): some `source` resource meeting `where` refers to
    this one through its reference parameter `name`."""
    sql, sql_args = _matching(source, where)
    return ("EXISTS (SELECT 1 FROM search_index h WHERE h.type=? AND h.param=? AND h.value=r.type || '/' || r.id"
            f" AND h.id IN (SELECT r.id {sql}))", [source, name, *sql_args])


def condition(param: SearchParam, modifier: str, raw: str, target: str | None = None) -> tuple[str, list]:
    _check_modifier(param, modifier)
    if raw == "":
        raise _bad(param.name, "empty value")
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise FhirError(400, [Issue(f"search parameter {param.name}: :missing takes true or false",
                                        expression=f"{param.name}:missing")])
        exists = "NOT EXISTS" if raw == "true" else "EXISTS"
        return f"{exists} (SELECT 1 FROM search_index s WHERE s.type=r.type AND s.id=r.id AND s.param=?)", \
            [param.name]
    if param.kind == "token":
        return token_condition(param.name, raw)
    if param.kind == "reference":
        return reference_condition(param.name, raw, modifier or target)
    if param.kind == "string":
        return string_condition(param.name, raw, modifier)
    return date_condition(param.name, raw)
