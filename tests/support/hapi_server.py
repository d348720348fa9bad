"""A real, independent FHIR R4 server for tests: HAPI FHIR's plain server, in memory (tests/support/hapi).

It parses strictly, validates requests against the R4 core profiles and, as a US EHR does, the US Core 6.1.0
profiles a resource claims (tests/fhir-packages, offline), and supports transactions with conditional updates
and conditional references, so a Bundle it accepts is one a standard server accepts.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests

from shared.config import ROOT
from tests.support.jvm import QUICK
from tests.support.scripts import TEST_VAR
from tests.support.waiting import wait_until

HAPI_DIR = ROOT / "tests" / "support" / "hapi"
JAR = HAPI_DIR / "target" / "test-ehr.jar"
LOG = TEST_VAR / "hapi.log"
PACKAGES = ROOT / "tests" / "fhir-packages"
US_CORE = ("hl7.fhir.us.core-6.1.0.tgz", "hl7.fhir.uv.extensions.r4-5.1.0.tgz", "hl7.fhir.uv.sdc-3.0.0.tgz",
           "hl7.fhir.uv.smart-app-launch-2.1.0.tgz", "hl7.fhir.uv.bulkdata-2.0.0.tgz", "ihe.formatcode.fhir-1.1.0.tgz")


def _sources() -> list[Path]:
    return [HAPI_DIR / "pom.xml", *(p for p in (HAPI_DIR / "src").rglob("*") if p.is_file())]


class HapiServer:
    """The test EHR on http://127.0.0.1:PORT/fhir, started as `java -jar test-ehr.jar PORT`."""

    def __init__(self, port: int, validation: bool = True, log: Path = LOG) -> None:
        self.port, self.validation, self.log = port, validation, log
        self.popen: subprocess.Popen | None = None
        self.started_at: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    @staticmethod
    def ensure_built() -> Path:
        """Runs `mvn package` only when the jar is missing or older than the pom or a source file; a run beside
        this one (IOP_TEST_VAR_DIR) waits for the build rather than racing it."""
        HAPI_DIR.joinpath("target").mkdir(exist_ok=True)
        with open(HAPI_DIR / "target" / ".build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return HapiServer._build()

    @staticmethod
    def _build() -> Path:
        if JAR.exists() and JAR.stat().st_mtime >= max(p.stat().st_mtime for p in _sources()):
            return JAR
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError("Maven (mvn) is needed to build the HAPI FHIR test server")
        built = subprocess.run([mvn, "-B", "-q", "-f", str(HAPI_DIR / "pom.xml"), "package"], cwd=ROOT,
                               capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
        if built.returncode != 0 or not JAR.exists():
            raise RuntimeError(f"building {JAR} failed ({built.returncode}):\n{(built.stdout + built.stderr)[-4000:]}")
        return JAR

    def start(self) -> HapiServer:
        if not JAR.exists():
            raise RuntimeError(f"{JAR} is missing: call ensure_built() first")
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("Java is needed to run the HAPI FHIR test server")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                raise RuntimeError(f"port {self.port} is already in use; the test EHR needs it free")
        packages = [arg for name in US_CORE for arg in ("--package", name)] if self.validation else ["--no-validation"]
        argv = [java, "-Xmx1g", *QUICK, "-cp", f"{JAR}:{PACKAGES}", "org.iopsuite.testehr.TestEhrServer",
                str(self.port), *packages]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:  # the child keeps its own descriptor
            self.popen = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        self.started_at = time.monotonic()
        return self

    def wait_ready(self, timeout: float = 300) -> float:
        """Waits until GET /fhir/metadata answers 200; returns the seconds since start()."""
        if self.popen is None or self.started_at is None:
            raise RuntimeError("start() the server first")

        def ready() -> bool:
            if self.popen.poll() is not None:
                raise RuntimeError(f"the HAPI FHIR server exited with {self.popen.returncode}; see {self.log}:\n"
                                   f"{self.log.read_text(errors='replace')[-4000:]}")
            try:
                return requests.get(f"{self.base_url}/metadata", timeout=5).status_code == 200
            except requests.RequestException:
                return False

        wait_until(ready, timeout=timeout, interval=0.2, what=f"the HAPI FHIR server on {self.base_url}")
        return time.monotonic() - self.started_at

    def stop(self, timeout: float = 20) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
        self.popen = None

    def __enter__(self) -> HapiServer:
        self.ensure_built()
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
