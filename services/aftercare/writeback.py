"""Write-back mode: changed resources as one R4 transaction Bundle that any FHIR server accepts without
knowing our ids.

Each resource is a conditional update (PUT Type?identifier=...) on an identifier that carries our own
id, so a re-sent transaction updates what the first one created. The Patient is never sent: the EHR
owns it and every Patient reference becomes a conditional reference on the patient's identifier there.
References to resources in the same Bundle become their urn:uuid fullUrl; references to our other
resources become conditional references on our identifier (or, with logical_refs, identifier-only
references, which never fail a transaction when the EHR lacks the target).
"""
from __future__ import annotations

import uuid

from services.aftercare import consent
from services.aftercare.notifications import DS4P_DISPLAY, display_mark
from shared import codes
from shared.fhir.util import now_instant

SINGLE_IDENTIFIER_TYPES = {"QuestionnaireResponse", "Composition"}  # identifier is 0..1 in R4
SERVER_META = ("versionId", "lastUpdated", "source")  # the receiving server assigns its own


def own_identifier(resource_type: str, resource_id: str) -> dict:
    """The identifier that names one of our resources on a foreign server."""
    return {"system": f"{codes.IOP_IDENTIFIER}/{resource_type}", "value": resource_id}


def writeback_transaction(resources: list[dict], patient_identifier: dict, part2_notice: str | None = None,
                          logical_refs: bool = False, bundle_id: str | None = None) -> dict:
    """A transaction Bundle for one patient's changed resources (one Bundle per patient)."""
    if not patient_identifier.get("system") or not patient_identifier.get("value"):
        raise ValueError("the patient identifier needs a system and a value")
    if any(r.get("resourceType") == "Patient" for r in resources):
        raise ValueError("the EHR owns the Patient; it is referenced, never written back")
    full_urls = {_type_id(r): _full_url(r) for r in resources}
    patient_ref = f"Patient?identifier={patient_identifier['system']}|{patient_identifier['value']}"
    notice = part2_notice or consent.part2_notice()
    meta = {"security": consent.ensure_labels({})["meta"]["security"], "extension": [display_mark(notice)]}
    return {"resourceType": "Bundle", "id": bundle_id or str(uuid.uuid4()), "meta": meta, "type": "transaction",
            "timestamp": now_instant(),
            "entry": [_entry(r, full_urls, patient_ref, notice, logical_refs) for r in resources]}


def _entry(resource: dict, full_urls: dict[str, str], patient_ref: str, notice: str, logical_refs: bool) -> dict:
    rtype, rid = resource["resourceType"], resource["id"]
    body = _rewrite(_outbound(resource, notice), full_urls, patient_ref, logical_refs)
    mine = own_identifier(rtype, rid)
    return {"fullUrl": full_urls[f"{rtype}/{rid}"], "resource": body,
            "request": {"method": "PUT", "url": f"{rtype}?identifier={mine['system']}|{mine['value']}"}}


def _outbound(resource: dict, notice: str) -> dict:
    """Labelled copy without our id and server metadata, carrying our identifier and the Part 2 notice."""
    body = consent.ensure_labels(resource)
    body.pop("id", None)
    meta = body["meta"]
    for key in SERVER_META:
        meta.pop(key, None)
    meta["extension"] = [*(e for e in meta.get("extension", []) if e.get("url") != DS4P_DISPLAY),
                         display_mark(notice)]
    mine = own_identifier(resource["resourceType"], resource["id"])
    if resource["resourceType"] in SINGLE_IDENTIFIER_TYPES:
        body.setdefault("identifier", mine)
    elif mine not in body.setdefault("identifier", []):
        body["identifier"].append(mine)
    return body


def _rewrite(node: object, full_urls: dict[str, str], patient_ref: str, logical_refs: bool) -> object:
    if isinstance(node, list):
        return [_rewrite(item, full_urls, patient_ref, logical_refs) for item in node]
    if not isinstance(node, dict):
        return node
    rewritten = {k: _rewrite(v, full_urls, patient_ref, logical_refs) for k, v in node.items()}
    if isinstance(node.get("reference"), str):
        return _rewrite_reference(rewritten, full_urls, patient_ref, logical_refs)
    return rewritten


def _rewrite_reference(reference: dict, full_urls: dict[str, str], patient_ref: str, logical_refs: bool) -> dict:
    target = reference["reference"]
    if target.startswith(("#", "urn:")) or "?" in target or "://" in target or "/" not in target:
        return reference  # contained, already a bundle or conditional reference, or not ours to know
    type_id = target.split("/_history/")[0]
    rtype, rid = type_id.split("/", 1)
    if rtype == "Patient":
        return {**reference, "reference": patient_ref}
    if type_id in full_urls:
        return {**reference, "reference": full_urls[type_id]}
    if logical_refs:
        logical = {k: v for k, v in reference.items() if k != "reference"}
        return {**logical, "type": rtype, "identifier": own_identifier(rtype, rid)}
    mine = own_identifier(rtype, rid)
    return {**reference, "reference": f"{rtype}?identifier={mine['system']}|{mine['value']}"}


def _full_url(resource: dict) -> str:
    """Deterministic, so the same change always yields the same Bundle."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{codes.IOP_IDENTIFIER}/{_type_id(resource)}')}"


def _type_id(resource: dict) -> str:
    return f"{resource['resourceType']}/{resource['id']}"
