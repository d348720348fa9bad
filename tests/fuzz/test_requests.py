"""Given any request a client could send, when a service answers it, then the answer keeps the contract.

Each family of requests (create, update, instance interactions, search, includes and result shaping, PATCH,
conditional update and delete, Bulk Data export, history, operations, Bundles, strays) is generated for each
service from what its registry serves; see tests/fuzz/contract.py for
what every answer must hold.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings

from shared.auth import mint
from tests.fuzz.conftest import spend
from tests.fuzz.contract import Sent, Target
from tests.fuzz.traffic import FAMILIES, PATIENT, SERVICES, authorizations
from tests.support.auth import TEST_SECRET, token

# The share of the campaign's requests each family gets, across all services (the stateful journeys take the rest).
SHARES = {"create": 0.12, "update": 0.07, "instance": 0.07, "search": 0.11, "include": 0.05, "patch": 0.05,
          "conditional": 0.04, "export": 0.04, "history": 0.05, "operation": 0.10, "bundle": 0.10, "stray": 0.02}


PARTNER = token(partner="fuzz-partner")  # a referral partner, confined to what it submitted at intake
NARROW = token("system/Patient.r system/CarePlan.rs")  # a client that may read a little
PATIENT_APP = mint(TEST_SECRET, "patient/*.cruds", subject="fuzz-app", patient=f"Patient/{PATIENT}")  # its own only


def authorization(value: str | None, target: Target) -> str | None:
    if value in (None, "default"):
        return value
    return value.replace("{token}", target.token).replace("{partner}", PARTNER).replace("{narrow}", NARROW) \
        .replace("{patient}", PATIENT_APP)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("service", SERVICES)
def test_any_request_gets_an_answer_that_keeps_the_contract(targets: dict[str, Target], service: str,
                                                            family: str) -> None:
    target = targets[service]

    def run(examples: int) -> None:
        @settings(max_examples=examples)
        @given(sent=FAMILIES[family](service), auth=authorizations)
        def exchange(sent: Sent, auth: str | None) -> None:
            target.check(sent, authorization(auth, target))

        exchange()

    spend(SHARES[family] / len(SERVICES), run)
