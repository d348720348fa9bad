"""References inside the resources of a batch or transaction: finding, rewriting and ordering by them."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
PLACEHOLDER = "urn:uuid:"  # a reference to another entry of the same Bundle, by its fullUrl


def references(node: Any) -> Iterator[tuple[str, str]]:
    """(FHIRPath-like path, reference) for every Reference.reference string below `node`."""
    stack: list[tuple[str, Any]] = [("", node)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("reference"), str):
                yield f"{path}.reference".lstrip("."), item["reference"]
            stack.extend((f"{path}.{k}", v) for k, v in item.items() if k != "reference")
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(item))


def rewrite(node: Any, mapping: dict[str, str]) -> Any:
    """A copy of `node` whose references found in `mapping` point where it says."""
    if isinstance(node, dict):
        out = {k: rewrite(v, mapping) for k, v in node.items()}
        if isinstance(out.get("reference"), str) and out["reference"] in mapping:
            out["reference"] = mapping[out["reference"]]
        return out
    if isinstance(node, list):
        return [rewrite(v, mapping) for v in node]
    return node


def is_conditional(ref: str) -> bool:
    """`Patient?identifier=...`: a search that must match exactly one resource, not a `Type/id`."""
    return "?" in ref and "/" not in ref.split("?")[0]


def placeholders(resource: Any) -> list[tuple[str, str]]:
    """The `urn:uuid:` references of a resource about to be stored: each names an entry that was not there."""
    return sorted((path, ref) for path, ref in references(resource) if ref.startswith(PLACEHOLDER))


def _method(entry: dict) -> Any:
    request = entry.get("request")
    return request.get("method") if isinstance(request, dict) else None


def _depths(needs: dict[int, set[int]]) -> dict[int, int]:
    """How long a chain of entries each entry depends on; a walk with its own stack, so a chain of any
    length is fine. An entry met again on its own path (a reference cycle) counts as depth 0 there."""
    depth: dict[int, int] = {}
    for root in needs:
        if root in depth:
            continue
        best, on_path = {root: -1}, {root}
        stack = [(root, iter(needs[root]))]
        while stack:
            node, pending = stack[-1]
            child = next(pending, None)
            if child is None:
                stack.pop()
                on_path.discard(node)
                depth[node] = 1 + best[node]
                if stack:
                    parent = stack[-1][0]
                    best[parent] = max(best[parent], depth[node])
            elif child in depth or child in on_path:
                best[node] = max(best[node], depth.get(child, 0))
            else:
                best[child] = -1
                on_path.add(child)
                stack.append((child, iter(needs[child])))
    return depth


def processing_order(entries: list[dict]) -> list[int]:
    """FHIR's order by method (DELETE, POST, PUT, GET), and within it every entry after the entries it
    references, so that a write's business rules (a response's Patient must exist) see what it points at."""
    by_url = {e["fullUrl"]: i for i, e in enumerate(entries) if e.get("fullUrl")}
    needs = {i: {by_url[r] for _, r in references(e.get("resource") or {}) if by_url.get(r, i) != i}
             for i, e in enumerate(entries)}
    depth = _depths(needs)
    return sorted(range(len(entries)), key=lambda i: (ORDER.get(_method(entries[i]), 9), depth[i], i))
