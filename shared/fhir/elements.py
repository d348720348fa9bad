"""What the FHIR R4 definitions say of each element, read from fhir.resources' models rather than restated here:
which elements are in the summary, which are required, and what types a Reference element may target.
`_summary` and `_elements` shape a resource with these."""
from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from shared.fhir.outcome import FhirError, Issue

SUMMARY_MODES = ("true", "false", "text", "data", "count")
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED",
             "display": "subsetted"}
ALWAYS = ("resourceType", "id", "meta")


@cache
def _fields(rtype: str) -> dict[str, dict[str, Any]]:
    """Each element of a resource type by its JSON name, with its definition's flags."""
    try:
        model = get_fhir_model_class(rtype)
    except KeyError:
        return {}
    return {(f.alias or name): (f.json_schema_extra or {}) for name, f in model.model_fields.items()
            if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("element_property")}


def reference_targets(rtype: str, element: str) -> tuple[str, ...]:
    """The resource types a top-level Reference element of `rtype` may point at (empty when any or unknown)."""
    targets = _fields(rtype).get(element, {}).get("enum_reference_types") or ()
    return () if "Resource" in targets else tuple(targets)


@cache
def summary_elements(rtype: str) -> frozenset[str]:
    return frozenset(k for k, flags in _fields(rtype).items() if flags.get("summary_element_property"))


@cache
def required_elements(rtype: str) -> frozenset[str]:
    return frozenset(k for k, flags in _fields(rtype).items() if flags.get("element_required"))


def _element_of(key: str) -> str:
    """The element a JSON key carries: `_status` (a primitive's extension) is status's."""
    return key[1:] if key.startswith("_") else key


def _chosen(key: str, names: frozenset[str]) -> bool:
    """Whether a key is one of the named elements, a choice element's variant (`effectiveDateTime` of
    `effective`) included."""
    element = _element_of(key)
    return element in names or any(element.startswith(n) and element[len(n):][:1].isupper() for n in names)


def _subsetted(resource: dict[str, Any], kept: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    meta["tag"] = [*(t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"), SUBSETTED]
    return {**kept, "meta": meta}


def summarised(resource: dict[str, Any], mode: str) -> dict[str, Any]:
    """A resource as `_summary=mode` asks (true, text, data; false and count leave it whole)."""
    rtype = resource.get("resourceType", "")
    if mode == "true":
        names = summary_elements(rtype) | set(ALWAYS)
    elif mode == "text":
        names = required_elements(rtype) | {"text", *ALWAYS}
    elif mode == "data":
        names = frozenset(k for k in resource if k != "text")
    else:
        return resource
    return _subsetted(resource, {k: v for k, v in resource.items() if _chosen(k, frozenset(names))})


def with_elements(resource: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    """A resource with only the named top-level elements (and those every resource keeps), as `_elements`
    asks; a name may be given as `Type.element`."""
    kept = frozenset(names) | frozenset(ALWAYS)
    return _subsetted(resource, {k: v for k, v in resource.items() if _chosen(k, kept)})


def parse_elements(raw: str, rtype: str) -> frozenset[str]:
    """`_elements=a,b` (or `Type.a`): the top-level element names asked for; 400 on a name the type lacks."""
    names = set()
    for item in raw.split(","):
        name = item.strip().removeprefix(f"{rtype}.")
        known = _fields(rtype)
        if not name or "." in name or not (name in known or any(k.startswith(name) and k[len(name):][:1].isupper()
                                                               for k in known)):
            raise FhirError(400, [Issue(f"_elements: {item[:40]!r} is not a top-level element of {rtype}",
                                        code="invalid", expression="_elements")])
        names.add(name)
    return frozenset(names)
