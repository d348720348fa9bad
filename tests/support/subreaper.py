"""Running deploy scripts under a parent that adopts their daemons and reaps none of them until it ends.

The scripts start daemons that outlive the script; they are re-parented to the nearest "child subreaper"
(prctl PR_SET_CHILD_SUBREAPER), else to init. Under this parent a daemon that dies stays a zombie until
the parent ends, so a test sees deterministically what an init that reaps late shows for a while: a pid
that `kill -0` still finds although the process is gone.

    with Subreaper() as parent:
        result = parent.run(["deploy/suite.sh", "status"], env)
"""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from types import TracebackType

from shared.config import ROOT

PR_SET_CHILD_SUBREAPER = 36


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Subreaper:
    """The client side: a child process that runs one command at a time for the test."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.subreaper"], cwd=ROOT, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def run(self, argv: list[str], env: dict[str, str], timeout: float = 180) -> Result:
        assert self.proc.stdin and self.proc.stdout
        try:
            self.proc.stdin.write(json.dumps({"argv": argv, "env": env, "timeout": timeout}) + "\n")
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline()
        except BrokenPipeError:
            answer = ""
        if not answer:
            raise RuntimeError(f"the subreaper process ended before answering {argv}")
        return Result(**json.loads(answer))

    def close(self) -> None:
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        self.proc.wait(30)

    def __enter__(self) -> Subreaper:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")


def _reap_all() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> None:
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    for line in sys.stdin:
        command = json.loads(line)
        try:
            done = subprocess.run(command["argv"], env=command["env"], cwd=ROOT, capture_output=True, text=True,
                                  timeout=command["timeout"])
            answer = {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
        except subprocess.TimeoutExpired as exc:
            answer = {"rc": -1, "stdout": _text(exc.stdout), "stderr": _text(exc.stderr) + f"\ntimed out: {exc}"}
        print(json.dumps(answer), flush=True)
    _reap_all()


if __name__ == "__main__":
    main()
