"""A worker process handles no HTTP request: it must not load what only requests need, each some MiB of its
resident memory (the footprint target of a worker is 80 MiB under load)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ONLY_FOR_REQUESTS = ("fhirpathpy", "antlr4", "jwt", "cryptography", "flask", "gunicorn")
SPECS = {"careplan": "services.careplan.handlers", "encounters": "services.encounters.handlers",
         "aftercare": "services.aftercare.worker_spec", "intake": "services.intake.handlers"}
PROBE = """
import importlib, json, sys
from shared.config import Settings
import shared.events.worker
module = importlib.import_module(sys.argv[1])
if hasattr(module, "worker_spec"):
    module.worker_spec(Settings(sys.argv[2]))
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


@pytest.mark.parametrize("service", sorted(SPECS))
def test_a_worker_loads_nothing_only_requests_need(service: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, SPECS[service], service], capture_output=True, text=True,
                          env={"IOP_VAR_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "IOP_LOG_LEVEL": "WARNING"},
                          cwd=Path(__file__).resolve().parents[2], timeout=120, check=True)
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "shared" in loaded and "kafka" in loaded  # the probe did load the worker
    assert not loaded & set(ONLY_FOR_REQUESTS), sorted(loaded & set(ONLY_FOR_REQUESTS))
