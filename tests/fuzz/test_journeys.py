"""Given resources a client really created, when it keeps working on them carelessly, then every answer
keeps the contract.

A hypothesis state machine per service: it creates valid resources, then updates them with broken or
stale bodies and ETags, reads and vreads odd versions, runs the service's operations on them with good
and broken Parameters, deletes them, and sends Bundles that refer to them. Existing resources reach code
that random ids never do (an active CarePlan's graduation, a Subscription's status, a deleted resource).
"""
from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, multiple, rule, run_state_machine_as_test

from tests.fuzz.conftest import spend
from tests.fuzz.contract import Sent, Target
from tests.fuzz.traffic import SERVICES, parameters, registry_of, seed
from tests.fuzz.values import encode, headers, mutated, queries, versions
from tests.support.examples import SHAPES, with_status

SHARE = 0.18  # of the campaign's requests, across all services
STEPS = 25
JSON = {"Content-Type": "application/fhir+json"}


def valid_variants(rtype: str) -> list[dict[str, Any]]:
    """The type's example, and the same in its other status (an active CarePlan, an active Goal ...)."""
    first = seed(rtype)
    shape = SHAPES.get(rtype)
    return [first, with_status(first, shape.other_status)] if shape else [first]


def journey_machine(target: Target) -> type[RuleBasedStateMachine]:
    registry = registry_of(target.service)
    writable = [t for t, rdef in registry.types.items() if not rdef.read_only]
    instance_ops = [op for op in registry.operations.values() if op.instance]

    class Journey(RuleBasedStateMachine):
        created = Bundle("created")

        def send(self, sent: Sent) -> Any:
            return target.json_of(target.check(sent))

        @rule(target=created, rtype=st.sampled_from(writable), variant=st.integers(0, 1))
        def create(self, rtype: str, variant: int) -> Any:
            options = valid_variants(rtype)
            body = options[variant % len(options)]
            resp = target.check(Sent(target.service, "POST", f"/fhir/{rtype}", headers=JSON, body=encode(body),
                                     family="journey"))
            if resp is None or resp.status_code != 201:
                return multiple()
            return rtype, resp.json()["id"], resp.json()

        @rule(item=created, data=st.data())
        def update(self, item: tuple[str, str, dict], data: st.DataObject) -> None:
            rtype, rid, current = item
            body = data.draw(st.one_of(st.just(copy.deepcopy(current)), mutated(current)))
            hdrs = {**data.draw(headers(body=True)), **JSON}
            etag = data.draw(st.sampled_from([None, 'W/"1"', 'W/"2"', 'W/"9"', 'W/"²"', "*", ""]))
            if etag is not None:
                hdrs["If-Match"] = etag
            self.send(Sent(target.service, "PUT", f"/fhir/{rtype}/{rid}", headers=hdrs, body=encode(body),
                           family="journey"))

        @rule(item=created, version=versions, suffix=st.sampled_from(["", "/_history", "/_history/{v}"]),
              method=st.sampled_from(["GET", "GET", "HEAD", "DELETE"]))
        def touch(self, item: tuple[str, str, dict], version: str, suffix: str, method: str) -> None:
            rtype, rid, _ = item
            path = f"/fhir/{rtype}/{rid}" + suffix.replace("{v}", version)
            self.send(Sent(target.service, method if suffix == "" else "GET", path, family="journey"))

        @rule(item=created, data=st.data())
        def operate(self, item: tuple[str, str, dict], data: st.DataObject) -> None:
            rtype, rid, _ = item
            ops = [op for op in instance_ops if op.type == rtype]
            name = data.draw(st.sampled_from([op.name for op in ops] + ["validate", "everything"]))
            method = data.draw(st.sampled_from(["POST", "POST", "GET"]))
            body = data.draw(st.one_of(parameters(op=name, rtype=rtype),
                                       parameters(op=name, rtype=rtype).flatmap(mutated)))
            query = data.draw(queries(["eventsSinceNumber", "eventsUntilNumber", "content"]))
            self.send(Sent(target.service, method, f"/fhir/{rtype}/{rid}/${name}", params=query,
                           headers=JSON if method == "POST" else {}, body=encode(body) if method == "POST" else None,
                           family="journey"))

        @rule(item=created, data=st.data())
        def search_around(self, item: tuple[str, str, dict], data: st.DataObject) -> None:
            rtype, rid, _ = item
            names = [p.name for p in registry.types[rtype].all_params]
            query = [("_id", rid), *data.draw(queries(names))]
            self.send(Sent(target.service, "GET", f"/fhir/{rtype}", params=query, family="journey"))

        @rule(items=st.lists(created, min_size=1, max_size=4), kind=st.sampled_from(["transaction", "batch"]),
              data=st.data())
        def post_bundle(self, items: list[tuple[str, str, dict]], kind: str, data: st.DataObject) -> None:
            entries = []
            for rtype, rid, current in items:
                method = data.draw(st.sampled_from(["PUT", "GET", "DELETE", "POST"]))
                if method == "PUT":
                    body = data.draw(st.one_of(st.just(current), mutated(current)))
                    entry: dict[str, Any] = {"resource": body, "request": {"method": "PUT", "url": f"{rtype}/{rid}"}}
                    if data.draw(st.booleans()):
                        entry["request"]["ifMatch"] = data.draw(st.sampled_from(['W/"1"', 'W/"3"', "x"]))
                elif method == "POST":
                    entry = {"resource": {k: v for k, v in current.items() if k not in ("id", "meta")},
                             "request": {"method": "POST", "url": rtype,
                                         "ifNoneExist": data.draw(st.sampled_from([f"_id={rid}", "_id=none", ""]))}}
                else:
                    entry = {"request": {"method": method, "url": f"{rtype}/{rid}"}}
                entries.append(entry)
            self.send(Sent(target.service, "POST", "/fhir", headers=JSON,
                           body=encode({"resourceType": "Bundle", "type": kind, "entry": entries}), family="journey"))

    return Journey


@pytest.mark.parametrize("service", SERVICES)
def test_working_on_real_resources_keeps_the_contract(targets: dict[str, Target], service: str) -> None:
    machine = journey_machine(targets[service])

    def run(requests: int) -> None:
        run_state_machine_as_test(machine, settings=settings(max_examples=max(1, requests // STEPS),
                                                             stateful_step_count=STEPS))

    spend(SHARE / len(SERVICES), run)
