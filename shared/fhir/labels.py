"""Part 2 security labels (DOMAIN.md 5.2) on every resource derived from IOP care."""
from __future__ import annotations

import copy

from shared import codes
from shared.fhir.store import Stored, Transaction


def add_part2_labels(resource: dict) -> dict:
    """Adds the Part 2 labels that are missing to meta.security, keeping the labels already there."""
    security = resource.setdefault("meta", {}).setdefault("security", [])
    present = {(label.get("system"), label.get("code")) for label in security}
    security.extend(copy.deepcopy(lab) for lab in codes.PART2_LABELS if (lab["system"], lab["code"]) not in present)
    return resource


def label_part2(tx: Transaction, resource: dict, previous: Stored | None) -> None:
    """A before_write rule: whatever a client sends, the stored resource carries the Part 2 labels."""
    add_part2_labels(resource)
