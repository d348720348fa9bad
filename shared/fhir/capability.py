"""The CapabilityStatement, generated from what a service has registered: it claims nothing else."""
from __future__ import annotations

from typing import Any

from shared.fhir.registry import Registry
from shared.fhir.util import now_instant

INTERACTIONS = ["read", "vread", "update", "delete", "history-instance", "history-type", "create", "search-type"]
READ_ONLY = ["read", "vread", "history-instance", "history-type", "search-type"]


def _resource(registry: Registry, rtype: str) -> dict[str, Any]:
    rdef = registry.types[rtype]
    ops = [{"name": op.name, "definition": f"https://iop-suite.org/fhir/OperationDefinition/{rtype}-{op.name}",
            **({"documentation": op.doc} if op.doc else {})}
           for (t, _, _), op in sorted(registry.operations.items(), key=lambda kv: kv[1].name) if t == rtype]
    entry: dict[str, Any] = {
        "type": rtype,
        "interaction": [{"code": c} for c in (READ_ONLY if rdef.read_only else INTERACTIONS)],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": not rdef.read_only,
        "conditionalCreate": not rdef.read_only,
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
        "searchParam": [{"name": p.name, "type": "token" if p.kind == "token" else p.kind,
                         **({"documentation": p.doc} if p.doc else {})} for p in rdef.all_params],
    }
    if rdef.doc:
        entry["documentation"] = rdef.doc
    if ops:
        entry["operation"] = ops
    return entry


def capability_statement(registry: Registry, base: str, software_version: str,
                         security: dict[str, Any] | None = None) -> dict[str, Any]:
    rest: dict[str, Any] = {
        "mode": "server",
        "resource": [_resource(registry, t) for t in sorted(registry.types)],
        "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
    }
    system_ops = [{"name": op.name, "definition": f"https://iop-suite.org/fhir/OperationDefinition/{op.name}"}
                  for (t, _, _), op in registry.operations.items() if t is None]
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
        "rest": [rest],
    }
