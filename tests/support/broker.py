"""The real Apache Kafka broker the tests run against, started by deploy/kafka/kafka.sh."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from shared.config import ROOT
from shared.events.admin import create_topics, wait_for_kafka
from tests.support.ports import port as test_port

KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"


class Broker:
    """A broker of the tests' own (ports 19092/19093 + IOP_TEST_PORT_OFFSET, data under var/test) or an existing one."""

    def __init__(self, var_dir: Path, port: int = test_port(19092)) -> None:
        self.external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        self.var_dir, self.port = var_dir, port
        self.bootstrap = self.external or f"127.0.0.1:{port}"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "IOP_VAR_DIR": str(self.var_dir), "IOP_KAFKA_PORT": str(self.port),
                "IOP_KAFKA_CONTROLLER_PORT": str(self.port + 1)}

    def _script(self, action: str) -> None:
        subprocess.run([str(KAFKA_SH), action], env=self._env(), check=True, cwd=ROOT)

    def start(self, fresh: bool = False) -> None:
        if self.external:
            wait_for_kafka(self.bootstrap, 60)
        else:
            if fresh:
                self._script("stop")
                shutil.rmtree(self.var_dir / "kafka" / "data", ignore_errors=True)
            self._script("start")
        create_topics(self.bootstrap)

    def stop(self) -> None:
        if not self.external:
            self._script("stop")

    def restart(self) -> None:
        if self.external:
            raise RuntimeError("cannot restart an external cluster")
        self._script("stop")
        self._script("start")
