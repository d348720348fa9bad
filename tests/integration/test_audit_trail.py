"""The audit trail, in process: a write's AuditEvent commits with the write (one transaction, not two), every
request is recorded exactly once, and a failed write leaves its refusal on record, not a success."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.integration.test_fhir_conformance import ALICE, Fhir
from tests.support.examples import minimal


@pytest.fixture
def careplan(open_service: Callable[[str], Fhir]) -> Fhir:
    fhir = open_service("careplan")
    fhir.admit(ALICE)
    return fhir


@contextmanager
def counting_transactions(fhir: Fhir) -> Iterator[list[int]]:
    """The number of store transactions the requests inside open (the real store's, counted on the way in)."""
    store = fhir.app.extensions["iop"].api.store
    opened = [0]
    real = store.transaction

    @contextmanager
    def counted() -> Iterator[Any]:
        opened[0] += 1
        with real() as tx:
            yield tx

    store.transaction = counted  # type: ignore[method-assign]
    try:
        yield opened
    finally:
        store.transaction = real  # type: ignore[method-assign]


def trail(fhir: Fhir, **params: str) -> list[dict[str, Any]]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return [e["resource"] for e in fhir.search("AuditEvent", f"{query}&_total=accurate").get("entry", [])]


def test_a_write_and_its_audit_event_commit_in_one_transaction(careplan: Fhir) -> None:
    with counting_transactions(careplan) as opened:
        created = careplan.post("/fhir/CarePlan", minimal("CarePlan", ALICE), headers={"Prefer": "return=minimal"})
    assert created.status_code == 201
    assert opened[0] == 1  # the create and its record: one commit

    rid = created.headers["Location"].split("/")[-3]
    records = [e for e in trail(careplan, action="C") if any(
        x["what"].get("reference") == f"CarePlan/{rid}" for x in e["entity"])]
    assert len(records) == 1 and records[0]["outcome"] == "0"
    # recorded from the write's own answer: the patient is named even though the client asked for no body
    assert any(x["what"].get("reference") == f"Patient/{ALICE}" for x in records[0]["entity"])


def test_updates_deletes_and_transaction_bundles_are_recorded_once_each(careplan: Fhir) -> None:
    goal = careplan.create(minimal("Goal", ALICE))
    with counting_transactions(careplan) as opened:
        assert careplan.put(f"/fhir/Goal/{goal['id']}", {**goal, "lifecycleStatus": "active"}).status_code == 200
        assert careplan.delete(f"/fhir/Goal/{goal['id']}").status_code in (200, 204)
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": minimal("Goal", ALICE), "request": {"method": "POST", "url": "Goal"}}]}
        assert careplan.post("/fhir", bundle).status_code == 200
    assert opened[0] == 3
    actions = sorted(e["action"] for e in trail(careplan, entity=f"Goal/{goal['id']}"))
    assert actions == ["C", "D", "U"]
    assert len([e for e in trail(careplan, action="C") if e["entity"][0]["description"] in ("/fhir", "/fhir/")]) == 1


def test_a_refused_write_is_recorded_as_refused_and_stores_nothing_else(careplan: Fhir) -> None:
    before = careplan.search("CarePlan", "_total=accurate")["total"]
    refused = careplan.post("/fhir/CarePlan", {**minimal("CarePlan", ALICE), "status": "no-such-status"})
    assert refused.status_code in (400, 422)
    assert careplan.search("CarePlan", "_total=accurate")["total"] == before
    failures = [e for e in trail(careplan, action="C") if e["outcome"] != "0"]
    assert len(failures) == 1 and failures[0]["outcome"] == "4"
    assert not [e for e in trail(careplan, action="C") if e["outcome"] == "0"]  # no success on record for it
