"""The operator's view of the running suite."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.support.broker import Broker
from tests.support.processes import TEST_PORTS, service_env


def test_iop_status_reports_services_broker_lag_dead_letters_and_subscriptions(suite, broker: Broker,
                                                                               tmp_path) -> None:
    env = service_env(tmp_path, broker.bootstrap, {"PATH": os.environ.get("PATH", "")})
    out = subprocess.run([sys.executable, "-m", "shared.cli", "status"], env=env, capture_output=True, text=True,
                         timeout=60)
    for service in TEST_PORTS:
        assert f"{service:<11} ready" in out.stdout, out.stdout
    assert f"reachable at {broker.bootstrap}" in out.stdout
    for group in ("iop-careplan", "iop-encounters", "iop-aftercare"):
        assert group in out.stdout
    assert "iop.careplan.events.dlq" in out.stdout and "EHR subscriptions in error:" in out.stdout
    assert "could not read" not in out.stdout, out.stdout
    # These processes are the tests' own, not supervisord's: no replica is listed as if it were supervised.
    assert out.stdout.startswith("processes: none under supervisord for this var dir\n"), out.stdout
    assert "consumer group members:\n  iop-" in out.stdout, out.stdout
