"""The deployment checks' command-line tools: promtool under var/tools (`make tools`, once; then cached), the others
in the virtual environment."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from shared.config import ROOT

TOOLS = ROOT / "var" / "tools"
WHERE = {"promtool": TOOLS / "prometheus" / "usr" / "bin" / "promtool",
         "hadolint": Path(sys.executable).parent / "hadolint",
         "kubernetes-validate": Path(sys.executable).parent / "kubernetes-validate"}


def tool(name: str) -> str:
    """The path of a tool; a missing one fails the test that needs it (`make tools` installs it)."""
    path = WHERE.get(name)
    if path is not None and path.exists():
        return str(path)
    found = shutil.which(name)
    assert found, f"{name} is not installed: run `make tools`"
    return found
