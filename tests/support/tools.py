"""The deployment checks' command-line tools, installed under var/tools by `make tools` (once; then cached)."""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from shared.config import ROOT

TOOLS = ROOT / "var" / "tools"
WHERE = {"promtool": TOOLS / "prometheus" / "usr" / "bin" / "promtool", "helm": TOOLS / "bin" / "helm",
         "hadolint": Path(sys.executable).parent / "hadolint",
         "kubernetes-validate": Path(sys.executable).parent / "kubernetes-validate"}


BUILD_WAIT_S = 1800.0  # a helm build on a busy 2-CPU machine


def _building(name: str) -> bool:
    """Whether `make test` is still building the tool in the background (its pid file names a live process)."""
    try:
        pid = int((TOOLS / f"{name}-build.pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def tool(name: str) -> str:
    """The path of a tool; a missing one fails the test that needs it (`make tools` installs it)."""
    path = WHERE.get(name)
    deadline = time.monotonic() + BUILD_WAIT_S
    while path is not None and not path.exists() and _building(name) and time.monotonic() < deadline:
        time.sleep(2)
    if path is not None and path.exists():
        return str(path)
    found = shutil.which(name)
    assert found, f"{name} is not installed: run `make tools`"
    return found
