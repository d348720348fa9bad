"""An operation's input, checked before its handler runs: a valid Parameters resource carrying only the
parameters the operation declares, each with its declared value type and cardinality (or, on GET, only
declared names in the query string). Handlers then read what is there without guarding every step."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from shared.fhir.outcome import FhirError, Issue
from shared.fhir.validation import validate_resource

NUMBER_TYPES = ("valueString", "valueInteger", "valueUnsignedInt", "valuePositiveInt")
QUERY_CONTROL = frozenset({"_format", "_pretty", "_summary", "_elements"})  # FHIR's, accepted on any GET


@dataclass(frozen=True)
class OperationParameter:
    """One `in` parameter of an OperationDefinition: `types` are the value[x] keys it may carry ("resource" for
    a resource); a parameter with `parts` carries parts instead of a value."""

    name: str
    types: tuple[str, ...] = ()
    min: int = 0
    max: int | None = 1  # None: any number
    parts: tuple[OperationParameter, ...] = ()

    @property
    def cardinality(self) -> str:
        return f"{self.min}..{'*' if self.max is None else self.max}"


def _bad(path: str, message: str, code: str = "invalid") -> Issue:
    return Issue(f"{path}: {message}", code=code, expression=path)


def _value_keys(parameter: dict[str, Any]) -> list[str]:
    return [k for k in parameter if k.startswith("value") or k == "resource"]


def _one(parameter: dict[str, Any], declared: OperationParameter, path: str) -> list[Issue]:
    if declared.parts:
        if _value_keys(parameter):
            return [_bad(path, f"{declared.name} carries parts, not a value", "structure")]
        return _list_issues(parameter.get("part", []), declared.parts, f"{path}.part", "part")
    keys = _value_keys(parameter)
    if "part" in parameter or len(keys) != 1 or keys[0] not in declared.types:
        return [_bad(path, f"{declared.name} must carry one of {', '.join(declared.types)}", "structure")]
    return []


def _list_issues(parameters: list[dict[str, Any]], declared: tuple[OperationParameter, ...], path: str,
                 what: str) -> list[Issue]:
    by_name = {d.name: d for d in declared}
    issues: list[Issue] = []
    for i, parameter in enumerate(parameters):
        spec = by_name.get(parameter.get("name"))
        if spec is None:
            issues.append(_bad(f"{path}[{i}]", f"unknown {what}; this operation takes "
                                              f"{', '.join(by_name) or 'none'}", "not-supported"))
        else:
            issues += _one(parameter, spec, f"{path}[{i}]")
    issues += _counts(Counter(p.get("name") for p in parameters), declared, path)
    return issues


def _counts(seen: Counter, declared: tuple[OperationParameter, ...], path: str | None) -> list[Issue]:
    """Cardinality of each declared parameter; `path` None for a query string, where a name is its own path."""
    issues = []
    for spec in declared:
        n = seen[spec.name]
        if n < spec.min or (spec.max is not None and n > spec.max):
            where = f"{path}.where(name='{spec.name}')" if path else spec.name
            issues.append(Issue(f"{spec.name} is given {n} time(s); it takes {spec.cardinality}",
                                code="required" if n < spec.min else "structure", expression=where))
    return issues


def check_body(body: dict[str, Any] | None, declared: tuple[OperationParameter, ...], operation: str) -> None:
    """A POSTed body: a valid Parameters resource (400 when not) with only what the operation declares."""
    if body is None:
        issues = _counts(Counter(), declared, "Parameters.parameter")
    elif body.get("resourceType") != "Parameters":
        issues = [Issue(f"${operation} takes a Parameters resource", code="structure", expression="resourceType")]
    else:
        try:
            validate_resource(body, "Parameters")
        except FhirError as exc:
            raise FhirError(400, exc.issues) from None
        issues = _list_issues(body.get("parameter", []), declared, "Parameters.parameter", "parameter")
    if issues:
        raise FhirError(400, issues)


def check_query(args: list[tuple[str, str]], declared: tuple[OperationParameter, ...], complete: bool = True) -> None:
    """A query string: declared names only (FHIR's _format and the like aside), each as often as declared;
    not `complete` when a body brings the rest (a POST), so nothing is required of the query then."""
    if not complete:
        declared = tuple(OperationParameter(d.name, d.types, 0, d.max, d.parts) for d in declared)
    names = {d.name for d in declared}
    issues = [Issue(f"unknown parameter {name}; this operation takes {', '.join(sorted(names)) or 'none'}",
                    code="not-supported", expression=name)
              for name, _ in args if name not in names and name not in QUERY_CONTROL]
    issues += _counts(Counter(name for name, _ in args), tuple(d for d in declared if not d.parts), None)
    if issues:
        raise FhirError(400, issues)


# -- $validate ------------------------------------------------------------------------------------

VALIDATE = (OperationParameter("resource", ("resource",)), OperationParameter("mode", ("valueCode",)),
            OperationParameter("profile", ("valueUri", "valueCanonical")))
VALIDATE_MODES = ("create", "update")
BASE_PROFILE = "http://hl7.org/fhir/StructureDefinition/"


@dataclass(frozen=True)
class ValidationRequest:
    resource: dict[str, Any]
    mode: str | None = None
    profile: str | None = None


def validation_request(body: dict[str, Any], rtype: str, args: list[tuple[str, str]]) -> ValidationRequest:
    """What `[type]/$validate` was asked: the resource itself as the body, or a Parameters holding it, with
    mode and profile from the Parameters or the query string. A malformed request is 400."""
    check_query(args, VALIDATE[1:])
    query = dict(args)
    resource: Any = body
    mode, profile = query.get("mode"), query.get("profile")
    if body.get("resourceType") == "Parameters" and rtype != "Parameters":
        check_body(_without_resources(body), VALIDATE, "validate")  # the resource's own problems are the answer
        given = {p["name"]: p for p in body.get("parameter", [])}
        resource = given.get("resource", {}).get("resource")
        mode = given.get("mode", {}).get("valueCode", mode)
        profile = next((v for k, v in given.get("profile", {}).items() if k.startswith("value")), profile)
    if resource is None:
        raise FhirError.single(400, "$validate needs the resource: the body, or the Parameters' resource parameter",
                               code="required", expression="Parameters.parameter.where(name='resource')")
    if mode is not None and mode not in VALIDATE_MODES:
        raise FhirError.single(400, f"mode must be one of {', '.join(VALIDATE_MODES)} here (delete validates "
                                    f"against an instance, which this server does not offer)", expression="mode")
    return ValidationRequest(resource, mode, profile)


_STAND_IN = {"resourceType": "Basic", "code": {"text": "the resource to validate"}}


def _without_resources(body: dict[str, Any]) -> dict[str, Any]:
    """The Parameters with each resource parameter's resource (an object) replaced by a valid stand-in."""
    parameters = body.get("parameter")
    if not isinstance(parameters, list):
        return body
    return {**body, "parameter": [{**p, "resource": _STAND_IN} if isinstance(p, dict) and isinstance(
        p.get("resource"), dict) else p for p in parameters]}


def validation_issues(asked: ValidationRequest, rtype: str) -> list[Issue]:
    """The problems $validate reports (in a 200 OperationOutcome): the resource's, then what the mode adds."""
    try:
        validate_resource(asked.resource, rtype)
        issues: list[Issue] = []
    except FhirError as exc:
        issues = list(exc.issues)
    if asked.mode == "update" and not asked.resource.get("id"):
        issues.append(Issue("an update needs the resource's id", code="required", expression=f"{rtype}.id"))
    if asked.profile and asked.profile.split("|")[0] != BASE_PROFILE + rtype:
        issues.append(Issue("only the base FHIR R4 definition was checked; this server does not validate against "
                            "the profile named", code="not-supported", severity="warning", expression="profile"))
    return issues
