"""What a batch or transaction Bundle must be before its entries are read: JSON shapes, and FHIR's bdl-7."""
from __future__ import annotations

from typing import Any

from shared.fhir.outcome import FhirError, Issue

MAX_ENTRIES = 10_000  # well past any partner's submission; a larger batch is split by its sender
_ENTRY_PARTS = {"fullUrl": str, "resource": dict, "request": dict, "search": dict, "response": dict}
_REQUEST_PARTS = ("method", "url", "ifNoneExist", "ifMatch", "ifNoneMatch", "ifModifiedSince")


def _shape_issues(bundle: dict[str, Any]) -> list[Issue]:
    issues = []
    if "identifier" in bundle and not isinstance(bundle["identifier"], dict):
        issues.append(Issue("Bundle.identifier must be a JSON object", code="structure",
                            expression="Bundle.identifier"))
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        return [*issues, Issue("Bundle.entry must be a JSON array of objects", code="structure",
                               expression="Bundle.entry")]
    for i, entry in enumerate(entries):
        path = f"Bundle.entry[{i}]"
        if not isinstance(entry, dict):
            issues.append(Issue(f"{path} must be a JSON object", code="structure", expression=path))
            continue
        issues += [Issue(f"{path}.{k} must be a JSON {'string' if t is str else 'object'}", code="structure",
                         expression=f"{path}.{k}") for k, t in _ENTRY_PARTS.items() if k in entry
                   and not isinstance(entry[k], t)]
        request = entry.get("request")
        if isinstance(request, dict):
            issues += [Issue(f"{path}.request.{k} must be a JSON string", code="structure",
                             expression=f"{path}.request.{k}") for k in _REQUEST_PARTS
                       if k in request and not isinstance(request[k], str)]
    return issues


def bundle_shape(bundle: dict[str, Any]) -> dict[str, Any]:
    """`bundle` itself when its entries are objects whose request, resource and fullUrl have the JSON types the
    server reads before validating (access checks, idempotency keys); else FhirError 400. Returns the Bundle."""
    entries = bundle.get("entry")
    if isinstance(entries, list) and len(entries) > MAX_ENTRIES:
        raise FhirError(413, [Issue(f"a batch or transaction takes at most {MAX_ENTRIES} entries", code="too-costly",
                                    expression="Bundle.entry")])
    issues = _shape_issues(bundle)
    if issues:
        raise FhirError(400, issues)
    return bundle


def duplicate_full_urls(bundle: dict[str, Any]) -> None:
    """bdl-7: a fullUrl names one entry, unless their resources' meta.versionId differ; else FhirError 400."""
    seen: dict[tuple[str, Any], int] = {}
    issues = []
    for i, entry in enumerate(bundle.get("entry") or []):
        url = entry.get("fullUrl") if isinstance(entry, dict) else None
        if not isinstance(url, str):
            continue
        meta = (entry.get("resource") or {}).get("meta")  # not validated yet: the walk reports a bad meta
        key = (url, str(meta.get("versionId")) if isinstance(meta, dict) else None)
        if key in seen:
            where = f"Bundle.entry[{i}].fullUrl"
            issues.append(Issue(f"{where}: the same as entry {seen[key]}'s; a fullUrl must be unique in a Bundle "
                                f"(bdl-7)", code="invariant", expression=where))
        else:
            seen[key] = i
    if issues:
        raise FhirError(400, issues)
