"""The fuzz campaign's own suite: the four web processes on ports of their own, with fresh stores.

Only the web processes run (no workers), so that nothing but the fuzzer's own requests writes to the
stores and "a refused write stored nothing" can be checked exactly against each store. With
IOP_TEST_STORE=postgresql each web process has a new database on the tests' PostgreSQL server.

`IOP_FUZZ_REQUESTS` sets how many requests the campaign sends in all (3,000 in `make test`, 600 on its PostgreSQL
pass; `make fuzz` sends 50,000 with fresh random inputs each run, where `make test` replays the same derandomised ones).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
import requests
from hypothesis import HealthCheck, Phase, settings

from tests.fuzz.contract import Sent, Tally, Target
from tests.fuzz.traffic import PATIENT
from tests.fuzz.values import encode
from tests.support import examples, processes
from tests.support.auth import token
from tests.support.ports import port
from tests.support.postgres import shared_server
from tests.support.postgres import test_engine as store_engine
from tests.support.waiting import wait_until

FUZZ_PORTS = {"intake": port(18181), "careplan": port(18182), "encounters": port(18183), "aftercare": port(18184)}
TOTAL = int(os.environ.get("IOP_FUZZ_REQUESTS") or (3000 if store_engine() == "sqlite" else 600))
CAMPAIGN = os.environ.get("IOP_FUZZ_PROFILE", "replay") == "campaign"
TALLY = Tally()

_common = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
# A failure against a live server is shrunk (a smaller request is easier to read) but not "explained":
# explaining replays the failing case hundreds of times. A campaign reports every violation as it finds it.
settings.register_profile("replay", derandomize=True, phases=[p for p in Phase if p is not Phase.explain], **_common)
settings.register_profile("campaign", derandomize=False, phases=[Phase.generate], **_common)
settings.load_profile("campaign" if CAMPAIGN else "replay")


@pytest.fixture(scope="session")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Target]]:
    var_dir = tmp_path_factory.mktemp("fuzz")
    extra = {f"IOP_{s.upper()}_PORT": str(p) for s, p in FUZZ_PORTS.items()}
    extra |= {f"IOP_{s.upper()}_BASE_URL": f"http://127.0.0.1:{p}/fhir" for s, p in FUZZ_PORTS.items()}
    # No worker runs and no broker is needed: web processes only write to their store and its outbox.
    env = processes.service_env(var_dir, "127.0.0.1:9", extra)
    stores = {s: var_dir / f"{s}.db" for s in FUZZ_PORTS}
    if store_engine() == "postgresql":
        stores = {s: shared_server().create_database(f"fuzz_{s}") for s in FUZZ_PORTS}
        env |= {f"IOP_{s.upper()}_DB": url for s, url in stores.items()}
    procs = [processes.web(s, env, var_dir, port=p).start() for s, p in FUZZ_PORTS.items()]
    try:
        for service, p in FUZZ_PORTS.items():
            wait_until(lambda p=p: _up(f"http://127.0.0.1:{p}/healthz"), 60, 0.1, f"fuzz {service} up")
        found = {s: Target(s, f"http://127.0.0.1:{p}", stores[s], token(), TALLY, strict=not CAMPAIGN)
                 for s, p in FUZZ_PORTS.items()}
        # The Patient the generated resources are about, so that intake's rules let valid ones through.
        patient = {**examples.minimal("Patient", PATIENT), "id": PATIENT}
        created = found["intake"].check(Sent("intake", "PUT", f"/fhir/Patient/{PATIENT}", body=encode(patient),
                                             headers={"Content-Type": "application/fhir+json"}, family="setup"))
        assert created is not None and created.status_code == 201, created.text if created is not None else ""
        yield found
    finally:
        for proc in procs:
            proc.stop()


def _up(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def spend(share: float, run: Callable[[int], None]) -> None:
    """Run `run(max_examples)` until it has sent its share of the campaign's requests.

    A replayed (derandomised) run is deterministic, so it runs once; a campaign draws fresh inputs each round.
    """
    wanted = max(1, int(TOTAL * share))
    start, broken = TALLY.requests, len(TALLY.broken)
    for _ in range(1000 if CAMPAIGN else 1):
        sent = TALLY.requests - start
        if sent >= wanted:
            break
        run(max(1, wanted - sent))
    found = TALLY.broken[broken:]
    assert not found, f"{len(found)} contract violations, e.g. {found[0][0]}: {found[0][1][:600]}"


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's own hook signature
    if TALLY.requests:
        terminalreporter.write_line("")
        for line in TALLY.render().splitlines():
            terminalreporter.write_line(line)
