"""Validation of FHIR R4 JSON where it enters a service.

A resource is checked once, at the edge, and the dict we checked is the dict we keep:
nothing is re-serialised. Two passes find the problems, one issue per problem:

- a walk over the JSON, driven by the fhir.resources field tables, for what the models
  let through or report poorly: unknown elements, JSON types (pydantic would turn "true"
  into True), nulls, required elements and choice types (the models skip those checks
  once any field fails), required bindings, reference formats and resource ids;
- `Model.model_validate` of fhir.resources (R4B models) for the formats of the
  primitive types: dates, instants, uris, base64 and the rest.

Diagnostics never repeat a submitted value: values may be PHI.
"""
from __future__ import annotations

import json
import logging
import re
import types
import typing
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from itertools import accumulate
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from shared.fhir.bindings import R4_RESOURCE_TYPES, REQUIRED_BINDINGS
from shared.fhir.outcome import FhirError, Issue

logger = logging.getLogger(__name__)

ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_ID = r"[A-Za-z0-9\-.]{1,64}"
_RELATIVE_REF = re.compile(rf"([A-Za-z]+)/{_ID}(?:/_history/{_ID})?")
_CONDITIONAL_REF = re.compile(r"([A-Za-z]+)\?\S+")
_ABSOLUTE_REF = re.compile(r"https?://\S+")
_URN_REF = re.compile(
    r"urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|urn:oid:[0-2](?:\.(?:0|[1-9][0-9]*))+"
)
_CONTAINED_REF = re.compile(rf"#(?:{_ID})?")
_WHITESPACE = re.compile(r"\s")
_ID_RULE = "an id is 1 to 64 characters from A-Z, a-z, 0-9, '-' and '.'"
_REF_RULE = (
    "a reference is 'Type/id' (optionally '/_history/vid'), an absolute http(s) URL, "
    "'urn:uuid:<uuid>', 'urn:oid:<oid>' or a contained '#id'"
)
_MAX_WALK_DEPTH = 200
_BATCH_TYPES = ("batch", "transaction")
_BUNDLE_ENTRY = get_fhir_model_class("BundleEntry")


# ---------------------------------------------------------------------------------------
# The wire: bytes to a JSON object


def parse_json(body: bytes, max_depth: int = 64, array: bool = False) -> Any:
    """Decode a request body into a JSON object (or, with `array`, an array), or raise FhirError(400, code
    "structure")."""
    try:
        text = body if isinstance(body, str) else bytes(body).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _malformed("The body is not valid UTF-8") from None
    if _nested_deeper_than(text, max_depth):
        raise _malformed(f"The JSON is nested more than {max_depth} levels deep")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise _malformed("The JSON is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, integers too long to convert
        detail = f"{exc.msg} at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise _malformed(f"The body is not valid JSON{': ' + detail if detail else ''}") from None
    if array and not isinstance(data, list):
        raise _malformed("The body must be a JSON array (a JSON Patch document)")
    if not array and not isinstance(data, dict):
        raise _malformed("The body must be a JSON object (a FHIR resource)")
    return data


_STRING_LITERAL = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _nested_deeper_than(text: str, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` levels, counting brackets outside strings.

    Checked before json.loads, whose C scanner recurses once per level.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_A_BRACKET.sub("", _STRING_LITERAL.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) > limit


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _malformed(message: str) -> FhirError:
    return FhirError(400, [Issue(message, code="structure")])


def check_id(resource_id: str) -> None:
    """Reject a logical id taken from a URL unless it is a FHIR id."""
    if not isinstance(resource_id, str) or not ID_PATTERN.fullmatch(resource_id):
        raise FhirError(400, [Issue(f"Invalid resource id in the URL: {_ID_RULE}", code="invalid")])


# ---------------------------------------------------------------------------------------
# Public API: resources and Bundles


def validate_resource(data: dict, expected_type: str | None = None, *, allow_conditional_refs: bool = False) -> dict:
    """Return `data` itself when it is a valid FHIR R4 resource, else raise FhirError.

    400 when `resourceType` is missing; 422 for any other problem, one issue per problem.
    `expected_type` is the type of the endpoint the resource was sent to. A Bundle is checked
    whole, entries included; conditional references (`Type?params`) are allowed inside a
    transaction (only a transaction resolves them) or where the caller says so.
    """
    model = _endpoint_model(data, expected_type)
    resource_type = data["resourceType"]
    batch = resource_type == "Bundle" and data.get("type") in _BATCH_TYPES
    conditional = allow_conditional_refs or (batch and data.get("type") == "transaction")
    issues = _resource_issues(data, model, resource_type, conditional)
    if batch:
        entries = data.get("entry")
        for index, entry in enumerate(entries if isinstance(entries, list) else []):
            issues += _entry_rule_issues(entry, f"Bundle.entry[{index}]")
    if issues:
        raise FhirError(422, issues)
    return data


def check_structure(data: dict, expected_type: str | None = None) -> dict:
    """The structural part of `validate_resource`, about a tenth of its cost: element names, JSON types,
    cardinality, choice types, required bindings, ids and reference forms, nested resources included.

    Not checked: the lexical form of primitives (dates, instants, code and uri patterns). For content
    that passed `validate_resource` where it entered the suite, such as events from a service's outbox.
    """
    walk = _walked(data, _endpoint_model(data, expected_type), data["resourceType"], allow_conditional_refs=False)
    if walk.issues:
        raise FhirError(422, walk.issues)
    return data


def validate_bundle_entries(bundle: dict) -> None:
    """Check a batch or transaction Bundle posted to the service base, entries and their resources.

    Raises FhirError(422) with every problem, paths such as `Bundle.entry[3].resource.status`;
    `urn:uuid:` references are allowed, and conditional ones in a transaction. A resource that
    passed here needs no second validation when its entry is executed.
    """
    if not isinstance(bundle, dict) or bundle.get("type") not in _BATCH_TYPES:
        raise FhirError(422, [Issue("Bundle.type: expected a batch or transaction Bundle", code="invalid",
                                    expression="Bundle.type")])
    validate_resource(bundle, "Bundle")


def bundle_entry_errors(bundle: dict) -> dict[int, FhirError]:
    """The errors of each entry of a batch or transaction Bundle, by entry index; empty when all are valid.

    For a batch, which answers each entry on its own: only the entries with a problem fail, and
    the Bundle without them passes `validate_bundle_entries` unless its own elements are wrong.
    """
    errors: dict[int, FhirError] = {}
    entries = bundle.get("entry") if isinstance(bundle, dict) else None
    conditional = isinstance(bundle, dict) and bundle.get("type") == "transaction"
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        path = f"Bundle.entry[{index}]"
        if not isinstance(entry, dict):
            issues = [Issue(f"{path}: must be a JSON object", code="structure", expression=path)]
        else:
            issues = _resource_issues(entry, _BUNDLE_ENTRY, path, conditional) + _entry_rule_issues(entry, path)
        if issues:
            errors[index] = FhirError(422, issues)
    return errors


def _endpoint_model(data: Any, expected_type: str | None) -> type:
    resource_type = data.get("resourceType") if isinstance(data, dict) else None
    if not isinstance(resource_type, str) or not resource_type:
        raise FhirError(400, [Issue("The resource has no resourceType", code="structure", expression="resourceType")])
    if expected_type and resource_type != expected_type:
        raise FhirError(422, [Issue(f"resourceType: this endpoint accepts {expected_type} resources only",
                                    code="invalid", expression="resourceType")])
    model = _model_class(resource_type)
    if model is None:
        raise FhirError(422, [Issue("resourceType: not a FHIR R4 resource type this server supports",
                                    code="not-supported", expression="resourceType")])
    return model


def _entry_rule_issues(entry: Any, path: str) -> list[Issue]:
    """What a batch or transaction asks of an entry beyond the Bundle model (R4 bdl-3, bdl-4, a body to write)."""
    if not isinstance(entry, dict):
        return []  # the walk reports it
    issues = []
    if "response" in entry:
        issues.append(Issue(f"{path}.response: not allowed in a batch or transaction", code="invalid",
                            expression=f"{path}.response"))
    request = entry.get("request")
    if request is None:
        issues.append(Issue(f"{path}.request: required in a batch or transaction", code="required",
                            expression=f"{path}.request"))
    elif isinstance(request, dict) and request.get("method") in ("POST", "PUT") and entry.get("resource") is None:
        issues.append(Issue(f"{path}.resource: a POST or PUT entry needs a resource", code="required",
                            expression=f"{path}.resource"))
    return issues


# ---------------------------------------------------------------------------------------
# One resource: the walk, then the model


def _walked(data: dict, model: type, path: str, allow_conditional_refs: bool) -> _Walk:
    """The structural walk over a resource, done: its issues, and the nested resources no model knows."""
    walk = _Walk(allow_conditional_refs)
    walk.resource(data, model, path, depth=0)
    return walk


def _resource_issues(data: dict, model: type, path: str, allow_conditional_refs: bool) -> list[Issue]:
    """The problems of a resource (or of a Bundle entry: `model` may be an element's)."""
    walk = _walked(data, model, path, allow_conditional_refs)
    issues = walk.issues
    seen = {issue.expression for issue in issues}
    # fhir.resources raises KeyError/TypeError on a nested resource of unknown type: the walk has
    # reported those, so the model sees a stand-in and still reports the rest.
    checked = _replaced(data, walk.unknown_resources) if walk.unknown_resources else data
    for issue in _model_issues(checked, model, path, fallback=not issues):
        if issue.expression not in seen:
            seen.add(issue.expression)
            issues.append(issue)
    return issues


def element_is_list(resource_type: str, steps: list[str]) -> bool | None:
    """Whether the element reached by the JSON names `steps` from a resource's root repeats (None: no such
    element), so that an edit can add to it in the shape the definition gives it."""
    model = _model_class(resource_type)
    element = None
    for step in steps:
        element = _shape(model).elements.get(step) if model is not None else None
        if element is None:
            return None
        model = element.model
    return element.is_list if element is not None else None


@cache
def _model_class(resource_type: str) -> type | None:
    if resource_type not in R4_RESOURCE_TYPES:
        return None
    try:
        return get_fhir_model_class(resource_type)
    except ValueError:  # an R4 type that R4B dropped (MedicinalProduct..., EffectEvidenceSynthesis...)
        return None


def _resource_type_issue(resource_type: Any, path: str) -> Issue:
    if not isinstance(resource_type, str):
        return Issue(f"{path}: the resource has no resourceType", code="structure", expression=path)
    return Issue(f"{path}.resourceType: not a FHIR R4 resource type this server supports",
                 code="not-supported", expression=f"{path}.resourceType")


@dataclass(frozen=True)
class _Element:
    """What the JSON of one element must look like."""

    kind: str  # "boolean" | "integer" | "decimal" | "string" | "uri" | "object" | "resource"
    model: type | None
    is_list: bool
    codes: tuple[str, ...] | None  # the codes of a required binding


@dataclass(frozen=True)
class _Shape:
    """The elements of one fhir.resources model class, by JSON name."""

    name: str
    is_resource: bool
    elements: dict[str, _Element]
    required: tuple[str, ...]
    choices: tuple[tuple[str, tuple[str, ...], bool], ...]  # (prefix, element names, required)


@cache
def _shape(model: type) -> _Shape:
    binding_keys = [cls.__name__ for cls in model.__mro__]
    elements: dict[str, _Element] = {}
    required: list[str] = []
    choices: dict[str, tuple[list[str], bool]] = {}
    for name, field in model.model_fields.items():
        if name == "fhir_comments":
            continue
        json_name = field.alias or name
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        kind, child, is_list = _kind(field.annotation)
        codes = next((REQUIRED_BINDINGS[(k, json_name)] for k in binding_keys if (k, json_name) in REQUIRED_BINDINGS),
                     None)
        elements[json_name] = _Element(kind, child, is_list, codes)
        if field.is_required() or extra.get("element_required"):
            required.append(json_name)
        if extra.get("one_of_many"):
            names, _ = choices.setdefault(extra["one_of_many"], ([], bool(extra.get("one_of_many_required"))))
            names.append(json_name)
    return _Shape(
        name=model.__name__,
        is_resource=model.has_resource_base(),
        elements=elements,
        required=tuple(required),
        choices=tuple((prefix, tuple(names), req) for prefix, (names, req) in choices.items()),
    )


def _kind(annotation: Any) -> tuple[str, type | None, bool]:
    is_list = False
    while True:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
        elif origin is list:
            is_list, annotation = True, typing.get_args(annotation)[0]
        else:
            break
    if hasattr(annotation, "get_model_klass"):
        child = annotation.get_model_klass()
        return ("resource" if child.__name__ == "Resource" else "object"), child, is_list
    base, *metadata = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Annotated else [annotation]
    if any(type(item).__name__ in ("Uri", "Url", "Canonical") for item in metadata):
        return "uri", None, is_list  # fhir.resources lets whitespace through
    if base is bool:
        return "boolean", None, is_list
    if base is int:
        return "integer", None, is_list
    if base is Decimal:
        return "decimal", None, is_list
    return "string", None, is_list


_JSON_TYPES = {
    "boolean": "a JSON boolean (true or false)",
    "integer": "a JSON integer",
    "decimal": "a JSON number",
    "string": "a JSON string",
    "uri": "a JSON string",
    "object": "a JSON object",
    "resource": "a JSON object (a resource)",
}


def _json_type_ok(kind: str, value: Any) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "decimal":
        return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)
    if kind in ("string", "uri"):
        return isinstance(value, str)
    return isinstance(value, dict)


class _Walk:
    """One pass over a resource's JSON, collecting an issue per problem found."""

    def __init__(self, allow_conditional_refs: bool) -> None:
        self.allow_conditional_refs = allow_conditional_refs
        self.issues: list[Issue] = []
        self.unknown_resources: set[int] = set()  # id() of nested resources no model can validate

    def add(self, path: str, code: str, message: str) -> None:
        self.issues.append(Issue(f"{path}: {message}", code=code, expression=path))

    def resource(self, node: dict, model: type, path: str, depth: int) -> None:
        shape = _shape(model)
        resource_id = node.get("id")
        if shape.is_resource and isinstance(resource_id, str) and not ID_PATTERN.fullmatch(resource_id):
            self.add(f"{path}.id", "invalid", _ID_RULE)
        self.complex(node, shape, path, depth)

    def complex(self, node: dict, shape: _Shape, path: str, depth: int) -> None:
        if depth > _MAX_WALK_DEPTH:
            self.add(path, "structure", "nested too deeply")
            return
        for key, value in node.items():
            element = shape.elements.get(key)
            if element is None:
                if not (key == "resourceType" and shape.is_resource):
                    self.add(f"{path}.{_printable(key)}", "structure", f"unknown element for {shape.name} in FHIR R4")
                continue
            child_path = f"{path}.{key}"
            if value is None:
                self.add(child_path, "structure", "null is not allowed; leave the element out instead")
            elif not element.is_list:
                self.value(value, element, shape, key, child_path, depth)
            elif not isinstance(value, list):
                self.add(child_path, "structure", "must be a JSON array")
            elif not value:
                self.add(child_path, "structure", "an array must not be empty; leave the element out instead")
            else:
                # Nulls in arrays of primitives (and their `_x` siblings) keep values and extensions aligned.
                nulls_ok = element.kind != "object" or key.startswith("_")
                for index, item in enumerate(value):
                    if item is None:
                        if not nulls_ok:
                            self.add(f"{child_path}[{index}]", "structure", "null is not allowed in this array")
                    else:
                        self.value(item, element, shape, key, f"{child_path}[{index}]", depth)
        self.cardinality(node, shape, path)

    def value(self, value: Any, element: _Element, shape: _Shape, key: str, path: str, depth: int) -> None:
        if not _json_type_ok(element.kind, value):
            self.add(path, "structure", f"must be {_JSON_TYPES[element.kind]}")
        elif element.kind == "resource":
            self.nested_resource(value, path, depth)
        elif element.kind == "object":
            self.complex(value, _shape(element.model), path, depth + 1)
        elif element.kind == "uri" and _WHITESPACE.search(value):
            self.add(path, "invalid", "a uri, url or canonical must not contain whitespace")
        elif element.codes is not None and value not in element.codes:
            self.add(path, "code-invalid", "unknown code; the required value set allows " + ", ".join(element.codes))
        elif key == "reference" and shape.name == "Reference":
            self.reference(value, path)

    def nested_resource(self, node: dict, path: str, depth: int) -> None:
        resource_type = node.get("resourceType")
        model = _model_class(resource_type) if isinstance(resource_type, str) else None
        if model is None:
            self.issues.append(_resource_type_issue(resource_type, path))
            self.unknown_resources.add(id(node))
            return
        self.resource(node, model, path, depth + 1)

    def cardinality(self, node: dict, shape: _Shape, path: str) -> None:
        for name in shape.required:
            if name not in node and not _has_extension(node.get("_" + name)):
                self.add(f"{path}.{name}", "required", f"required element of {shape.name} is missing")
        for prefix, names, required in shape.choices:
            present = list(dict.fromkeys(key.removeprefix("_") for key in node if key.removeprefix("_") in names))
            if len(present) > 1:
                self.add(f"{path}.{present[1]}", "invalid", f"only one of {prefix}[x] may be present")
            elif required and not present:
                self.add(f"{path}.{prefix}", "required", f"one of {prefix}[x] is required")

    def reference(self, reference: str, path: str) -> None:
        relative = _RELATIVE_REF.fullmatch(reference)
        if relative:
            if relative.group(1) not in R4_RESOURCE_TYPES:
                self.add(path, "invalid", "the reference names a type that is not a FHIR R4 resource type")
            return
        if _ABSOLUTE_REF.fullmatch(reference) or _URN_REF.fullmatch(reference) or _CONTAINED_REF.fullmatch(reference):
            return
        conditional = _CONDITIONAL_REF.fullmatch(reference)
        if conditional and conditional.group(1) in R4_RESOURCE_TYPES:
            if not self.allow_conditional_refs:
                self.add(path, "invalid", "a conditional reference (Type?params) is only allowed in a transaction")
            return
        self.add(path, "invalid", _REF_RULE)


_STAND_IN = {"resourceType": "Basic", "code": {"text": "stand-in for a resource of unknown type"}}


def _replaced(node: Any, unknown: set[int]) -> Any:
    """A copy of `node` with the nested resources in `unknown` (by id()) replaced by a valid stand-in."""
    if id(node) in unknown:
        return _STAND_IN
    if isinstance(node, dict):
        return {key: _replaced(value, unknown) for key, value in node.items()}
    if isinstance(node, list):
        return [_replaced(item, unknown) for item in node]
    return node


def _has_extension(primitive_extension: Any) -> bool:
    return isinstance(primitive_extension, dict) and bool(primitive_extension.get("extension"))


def _printable(key: str) -> str:
    return key if len(key) <= 64 else key[:64] + "..."


# ---------------------------------------------------------------------------------------
# The fhir.resources model, its errors as issues

# Problems the walk reports itself (better placed, or missed by the model once a field fails).
_WALK_ERROR_TYPES = frozenset({"missing", "model_field_validation.missing", "extra_forbidden"})
_WALK_MESSAGES = ("Any of one field value is expected", "Expect any of field value", "None is not allowed")
_TYPE_MESSAGES = {
    "missing": ("required", "required element is missing"),
    "model_field_validation.missing": ("required", "required element is missing"),
    "extra_forbidden": ("structure", "unknown element in FHIR R4"),
    "json_invalid": ("structure", "must be a JSON object"),
    "model_type": ("structure", "must be a JSON object"),
    "dict_type": ("structure", "must be a JSON object"),
    "model_validation_format": ("structure", "must be a JSON object"),
    "list_type": ("structure", "must be a JSON array"),
    "string_type": ("structure", "must be a JSON string"),
    "bool_type": ("structure", "must be a JSON boolean (true or false)"),
    "bool_parsing": ("structure", "must be a JSON boolean (true or false)"),
    "int_type": ("structure", "must be a JSON integer"),
    "int_parsing": ("structure", "must be a JSON integer"),
    "int_from_float": ("structure", "must be a JSON integer"),
}
_SPEC_REGEX = re.compile(r"(\w+) value string does not match spec regex")


def _model_issues(data: dict, model: type, path: str, fallback: bool) -> list[Issue]:
    """The model's errors as issues, less those the walk reports; all of them if the walk found nothing."""
    try:
        model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    except Exception as exc:  # noqa: BLE001 - fhir.resources raises KeyError/TypeError on some bad input
        logger.info("fhir.resources could not validate a %s: %s", path, type(exc).__name__)
        if not fallback:
            return []
        return [Issue(f"{path}: the resource could not be validated", code="invalid", expression=path)]
    else:
        return []
    kept = [error for error in errors if not _walk_reports(error)]
    return [_issue_from_error(error, path) for error in (kept if kept or not fallback else errors)]


def _walk_reports(error: dict) -> bool:
    return error["type"] in _WALK_ERROR_TYPES or any(text in error["msg"] for text in _WALK_MESSAGES)


def _issue_from_error(error: dict, root: str) -> Issue:
    path = _expression(root, error["loc"])
    code, message = _TYPE_MESSAGES.get(error["type"], ("invalid", ""))
    if not message:
        message = _scrub(error["msg"].removeprefix("Value error, "), error.get("input"))
        match = _SPEC_REGEX.search(message)
        if match:
            message = f"not a valid FHIR {match.group(1)[0].lower()}{match.group(1)[1:]}"
    return Issue(f"{path}: {message}", code=code, expression=path)


_NOT_ELEMENTS = frozenset({"root", "__root__", "str", "int", "float", "bool", "list", "dict"})  # validator tags


def _expression(root: str, loc: tuple) -> str:
    """A FHIRPath-like path from a pydantic `loc`, in JSON names."""
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "resource_type":
            path += ".resourceType"
        elif part.isidentifier() and part not in _NOT_ELEMENTS:
            if part.endswith("__ext"):
                part = "_" + part.removesuffix("__ext")
            path += "." + part.removesuffix("_fhir")
    return path


def _scrub(message: str, submitted: Any) -> str:
    """Remove from a message any string the client submitted (pydantic and fhir.resources may quote it)."""
    for value in _strings(submitted):
        if len(value) >= 3 and value in message:
            message = message.replace(value, "(value)")
    return message


def _strings(value: Any, limit: int = 200) -> list[str]:
    found: list[str] = []
    stack = [value]
    while stack and len(found) < limit:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif item is not None:
            found.append(str(item))
    return found
