"""The CapabilityStatement, generated from what a service has registered: it claims nothing else."""
from __future__ import annotations

from typing import Any

from shared.fhir import uscore
from shared.fhir.includes import targets_of
from shared.fhir.registry import Operation, Registry
from shared.fhir.util import now_instant

INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
                "search-type"]
READ_ONLY = ["read", "vread", "history-instance", "history-type", "search-type"]


def _resource(registry: Registry, rtype: str) -> dict[str, Any]:
    rdef = registry.types[rtype]
    ops = [{"name": op.name, "definition": _definition(op), **({"documentation": op.doc} if op.doc else {})}
           for (t, _, _), op in sorted(registry.operations.items(), key=lambda kv: kv[1].name) if t == rtype]
    entry: dict[str, Any] = {
        "type": rtype,
        "interaction": [{"code": c} for c in (READ_ONLY if rdef.read_only else INTERACTIONS)],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": not rdef.read_only,
        "conditionalCreate": not rdef.read_only,
        "conditionalUpdate": not rdef.read_only,
        "conditionalDelete": "not-supported" if rdef.read_only else "single",
        "searchParam": [{"name": p.name, "type": "token" if p.kind == "token" else p.kind,
                         **({"documentation": p.doc} if p.doc else {})} for p in rdef.all_params],
    }
    if profiles := uscore.supported_profiles(rtype):
        entry["supportedProfile"] = profiles
    if includes := search_includes(registry, rtype):
        entry["searchInclude"] = includes
    if revincludes := search_revincludes(registry, rtype):
        entry["searchRevInclude"] = revincludes
    if rdef.doc:
        entry["documentation"] = rdef.doc
    if ops:
        entry["operation"] = ops
    return entry


def search_includes(registry: Registry, rtype: str) -> list[str]:
    """`Type:param` for each reference parameter of the type (what `_include` can follow here)."""
    rdef = registry.types[rtype]
    return [f"{rtype}:{p.name}" for p in rdef.all_params if p.kind == "reference" and
            targets_of(registry, rdef, p, None)]


def search_revincludes(registry: Registry, rtype: str) -> list[str]:
    """`Source:param` for each reference parameter served here that may point at the type."""
    return [f"{source}:{p.name}" for source, sdef in sorted(registry.types.items()) for p in sdef.all_params
            if p.kind == "reference" and rtype in targets_of(registry, sdef, p, None)]


def _definition(op: Operation) -> str:
    prefix = f"{op.type}-" if op.type else ""
    return op.definition or f"https://iop-suite.org/fhir/OperationDefinition/{prefix}{op.name}"


def capability_statement(registry: Registry, base: str, software_version: str,
                         security: dict[str, Any] | None = None) -> dict[str, Any]:
    rest: dict[str, Any] = {
        "mode": "server",
        "resource": [_resource(registry, t) for t in sorted(registry.types)],
        "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
    }
    # System operations, and those on a type this service does not serve (Patient/$everything at careplan)
    system_ops = [{"name": op.name, "definition": _definition(op), **({"documentation": op.doc} if op.doc else {})}
                  for (t, _, _), op in registry.operations.items() if t is None or t not in registry.types]
    if system_ops:
        rest["operation"] = system_ops
    if security:
        rest["security"] = security
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": now_instant(),
        "kind": "instance",
        "software": {"name": f"iop-suite {registry.service}", "version": software_version},
        "implementation": {"description": f"iop-suite {registry.service} service", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/json"],
        **({"implementationGuide": [uscore.IMPLEMENTATION_GUIDE]}
           if any(uscore.supported_profiles(t) for t in registry.types) else {}),
        "rest": [rest],
    }
