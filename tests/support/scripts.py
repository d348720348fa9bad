"""Running the deploy scripts as an operator does: a var dir of their own, an environment of their own."""
from __future__ import annotations

import os
import socket
from pathlib import Path

from shared.config import ROOT

KAFKA_SH, SUITE_SH = str(ROOT / "deploy" / "kafka" / "kafka.sh"), str(ROOT / "deploy" / "suite.sh")
# Where the tests' broker keeps its jars and data, and the tests keep their logs and figures: var/test, or
# IOP_TEST_VAR_DIR for a second run beside the first (with its own IOP_TEST_PORT_OFFSET).
TEST_VAR = Path(os.environ.get("IOP_TEST_VAR_DIR") or ROOT / "var" / "test").absolute()
KEPT = ("PATH", "HOME", "LANG", "TMPDIR", "JAVA_HOME")  # what an operator's shell holds besides our settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port_number: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port_number)) == 0


def scratch_var(tmp_path: Path) -> Path:
    """A var dir of its own that reuses the jars the tests' broker resolved, so no Maven run is needed."""
    var = tmp_path / "var"
    (var / "kafka").mkdir(parents=True)
    lib = TEST_VAR / "kafka" / "lib"
    if (lib / ".resolved").exists():
        (var / "kafka" / "lib").symlink_to(lib)
    return var


def operator_env(var: Path, **settings: str) -> dict[str, str]:
    """No KAFKA_BOOTSTRAP_SERVERS and none of the tests' own settings: only what is given."""
    return {**{k: os.environ[k] for k in KEPT if k in os.environ}, "IOP_VAR_DIR": str(var), **settings}


def state_of(pid: int) -> str | None:
    """The process state letter (R, S, Z ...), or None when no such process exists."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return None


def gone(pid: int) -> bool:
    return state_of(pid) in (None, "Z", "X")
