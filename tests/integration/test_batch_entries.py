"""A batch against a real store: an entry refused after its write leaves nothing of itself behind."""
from __future__ import annotations

from pathlib import Path

from shared.events.envelope import build_event
from shared.fhir.interactions import FhirApi
from shared.fhir.outcome import FhirError
from shared.fhir.registry import Registry, ResourceDef
from shared.fhir.store import Stored, Transaction, open_store
from shared.fhir.transaction import BundleProcessor
from tests.support.engines import query
from tests.support.postgres import store_locator

BASE = "http://127.0.0.1:8082/fhir"


def announce_then_check(tx: Transaction, stored: Stored, previous: Stored | None) -> None:
    """An after-write hook that announces the Goal, then refuses one (as a business rule found late would)."""
    tx.add_event(build_event("iop.goal.updated", BASE, "p1", stored.resource))
    if stored.resource["description"]["text"] == "refuse me":
        raise FhirError.single(422, "this goal breaks a rule found after it was written", code="business-rule")


def goal(text: str) -> dict:
    return {"fullUrl": f"urn:uuid:{abs(hash(text))}", "request": {"method": "POST", "url": "Goal"},
            "resource": {"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": text},
                         "subject": {"reference": "Patient/p1"}}}


def test_given_a_batch_entry_refused_after_its_write_then_only_it_is_undone(tmp_path: Path) -> None:
    store = open_store(store_locator(tmp_path / "careplan.db"))
    registry = Registry("careplan")
    registry.add(ResourceDef("Goal", after_write=[announce_then_check]))
    processor = BundleProcessor(FhirApi(store, registry, BASE))
    bundle = {"resourceType": "Bundle", "type": "batch",
              "entry": [goal("walk daily"), goal("refuse me"), goal("sleep eight hours")]}

    with store.transaction() as tx:
        result = processor.process(tx, bundle)

    assert [e["response"]["status"] for e in result["entry"]] == ["201 Created", "422", "201 Created"]
    assert "found after it was written" in result["entry"][1]["response"]["outcome"]["issue"][0]["diagnostics"]
    texts = sorted(text for (text,) in query(store, "SELECT json FROM resource WHERE type='Goal'"))
    assert len(texts) == 2 and not any("refuse me" in t for t in texts)
    assert store.history("Goal", None, None, 10, 0).total == 2
    events = store.unsent_events(10)
    assert len(events) == 2 and not any("refuse me" in e.value for e in events)
