"""The benchmarks' own broker and suite: separate ports and data, so they never meet `make run` or the tests.

Broker 127.0.0.1:29092 (controller 29093), services 28081..28084, data and logs under var/bench/.
Every process started here is recorded in var/bench/run/*.pid, stopped by its id at the end, and
stopped by its id at the next start if a killed run left it behind.

Two store profiles: `sqlite` (a SQLite file per service under var/bench, as `make run`) and `postgresql`
(a throwaway PostgreSQL server on 127.0.0.1:25432, cluster under var/bench/postgres, started and stopped
by deploy/postgres/postgres.sh, one database per service, durable as a production server is).
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.errors import KafkaError

from bench.measure import wait_until
from shared.config import ROOT
from shared.events.admin import create_topics
from shared.events.catalogue import ALL_TOPICS
from shared.serving import gunicorn_argv

VAR = ROOT / "var" / "bench"
KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"
BROKER_PORT = 29092
PORTS = {"intake": 28081, "careplan": 28082, "encounters": 28083, "aftercare": 28084}
BENCH_TOPICS = ("bench.hop", "bench.raw", "bench.bulk")  # the event-hop measurements' own, unseen by the services
CONSUMING = ("careplan", "encounters", "aftercare")  # intake's worker only relays its outbox
BOOTSTRAP = f"127.0.0.1:{BROKER_PORT}"
SECRET = secrets.token_urlsafe(32)  # this run's HS256 secret, given to its services as IOP_AUTH_HS256_SECRET
PARTNER = "bench-referrals"
PROFILES = ("sqlite", "postgresql")
PG_PORT = 25432
PG_DIR = VAR / "postgres"
PG_SH = ROOT / "deploy" / "postgres" / "postgres.sh"


def bearer(scopes: str = "system/*.cruds", partner: str | None = None) -> dict[str, str]:
    """An Authorization header the bench's services accept (a system client, or a referral partner)."""
    from shared.auth import mint

    return {"Authorization": f"Bearer {mint(SECRET, scopes, subject='iop-bench', partner=partner, ttl_s=3 * 3600)}"}


def partner_bearer() -> dict[str, str]:
    """A referral partner's token: it may submit intakes (and read back only what it submitted)."""
    return bearer("system/Patient.cr system/ServiceRequest.cr system/QuestionnaireResponse.cr", PARTNER)


def base_url(service: str) -> str:
    return f"http://127.0.0.1:{PORTS[service]}/fhir"


def broker_env() -> dict[str, str]:
    return {**os.environ, "IOP_VAR_DIR": str(VAR), "IOP_KAFKA_PORT": str(BROKER_PORT),
            "IOP_KAFKA_CONTROLLER_PORT": str(BROKER_PORT + 1), "PYTHON": sys.executable}


def service_env() -> dict[str, str]:
    env = {**os.environ, "IOP_VAR_DIR": str(VAR), "KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP, "PYTHONUNBUFFERED": "1",
           "IOP_AUTH_HS256_SECRET": SECRET}
    for name, port in PORTS.items():
        env[f"IOP_{name.upper()}_PORT"] = str(port)
        env[f"IOP_{name.upper()}_BASE_URL"] = base_url(name)
    return env


class Broker:
    """deploy/kafka/kafka.sh with the bench's ports and var dir; fresh data on every start."""

    def start(self) -> None:
        self.stop()
        shutil.rmtree(VAR / "kafka" / "data", ignore_errors=True)
        self._share_jars()
        subprocess.run([str(KAFKA_SH), "start"], env=broker_env(), cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        create_topics(BOOTSTRAP, ALL_TOPICS + BENCH_TOPICS)

    def stop(self) -> None:
        if (VAR / "kafka" / "broker.pid").exists():
            subprocess.run([str(KAFKA_SH), "stop"], env=broker_env(), cwd=ROOT, check=False, stdout=subprocess.DEVNULL)

    @property
    def pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((VAR / "kafka" / "broker.pid").read_text())
        return None

    @staticmethod
    def _share_jars() -> None:
        """Use the jars `make setup` resolved into var/kafka/lib instead of resolving them again."""
        mine, shared = VAR / "kafka" / "lib", ROOT / "var" / "kafka" / "lib"
        if not mine.exists() and (shared / ".resolved").exists():
            mine.parent.mkdir(parents=True, exist_ok=True)
            mine.symlink_to(shared, target_is_directory=True)


class PgServer:
    """deploy/postgres/postgres.sh with the bench's port and directory: a fresh cluster on every start."""

    def env(self) -> dict[str, str]:
        return {**os.environ, "IOP_PG_DIR": str(PG_DIR), "IOP_PG_PORT": str(PG_PORT)}

    def _script(self, *args: str) -> None:
        done = subprocess.run([str(PG_SH), *args], env=self.env(), cwd=ROOT, capture_output=True, text=True,
                              timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"postgres.sh {' '.join(args)} failed: {(done.stderr or done.stdout).strip()[-400:]}")

    def start(self) -> None:
        self.stop()
        shutil.rmtree(PG_DIR, ignore_errors=True)
        VAR.mkdir(parents=True, exist_ok=True)
        self._script("install")  # nothing to do when the PostgreSQL binaries are on the machine
        self._script("start")

    def stop(self) -> None:
        if (PG_DIR / "data" / "PG_VERSION").exists():
            self._script("stop")

    @property
    def pid(self) -> int | None:
        """The postmaster's (its backends are its children): the first line of postmaster.pid."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((PG_DIR / "data" / "postmaster.pid").read_text().split()[0])
        return None


def store_env(profile: str) -> dict[str, str]:
    """The IOP_<SERVICE>_DB of a store profile: SQLite files (the services' default) or the bench's databases."""
    if profile not in PROFILES:
        raise ValueError(f"store profile {profile!r}: expected one of {', '.join(PROFILES)}")
    if profile == "sqlite":
        return {f"IOP_{s.upper()}_DB": str(VAR / f"{s}.db") for s in PORTS}
    return {f"IOP_{s.upper()}_DB": f"postgresql://iop@127.0.0.1:{PG_PORT}/iop_{s}" for s in PORTS}


@dataclass
class Proc:
    name: str
    argv: list[str]
    popen: subprocess.Popen | None = None

    def start(self, env: dict[str, str]) -> Proc:
        (VAR / "log").mkdir(parents=True, exist_ok=True)
        with open(VAR / "log" / f"{self.name}.log", "ab") as out:
            self.popen = subprocess.Popen(self.argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        (VAR / "run").mkdir(parents=True, exist_ok=True)
        (VAR / "run" / f"{self.name}.pid").write_text(str(self.popen.pid))
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def stop(self, timeout: float = 20) -> None:
        if self.popen is not None:
            stop_group(self.popen.pid, timeout, self.popen)
            self.popen = None
        (VAR / "run" / f"{self.name}.pid").unlink(missing_ok=True)


def stop_group(pid: int, timeout: float, popen: subprocess.Popen | None = None) -> None:
    """SIGTERM the process group this bench started (its session), SIGKILL what is left after `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid, popen):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(5)


def _alive(pid: int, popen: subprocess.Popen | None) -> bool:
    if popen is not None:
        return popen.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_leftovers() -> None:
    """Processes a killed earlier bench run left behind: only those it recorded, and only if still ours."""
    for pidfile in (VAR / "run").glob("*.pid") if (VAR / "run").exists() else []:
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            if "services." in cmdline or "bench." in cmdline:
                stop_group(pid, 10)
        pidfile.unlink(missing_ok=True)
    with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
        PgServer().stop()


@dataclass
class Suite:
    """The four services: gunicorn (workers x threads per service) and `python -m services.<name>.worker`."""

    web: dict[str, tuple[int, int]]
    profile: str = "sqlite"
    procs: dict[str, Proc] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {**service_env(), **store_env(self.profile)}

    def start(self) -> None:
        for db in VAR.glob("*.db*"):
            db.unlink()
        env = self.env()
        for service, port in PORTS.items():
            workers, threads = self.web[service]
            self.procs[f"{service}-web"] = Proc(f"{service}-web", gunicorn_argv(service, port, workers, threads)
                                                ).start(env)
            self.procs[f"{service}-worker"] = Proc(f"{service}-worker", [
                sys.executable, "-m", f"services.{service}.worker"]).start(env)
        for service in PORTS:
            wait_until(lambda s=service: _ready(s), 120, 0.2, f"{service} ready (see var/bench/log/{service}-*.log)")
        self._ensure_consuming()

    def _ensure_consuming(self, timeout: float = 20) -> None:
        """Every worker's consumer group holds its partitions; a worker whose group has none is restarted once.

        kafka-python can join a group before it has the topics' metadata ("No partition metadata for
        topic ...") and then sit with no partitions: the service is ready but consumes nothing.
        """
        groups = {f"iop-{s}": s for s in CONSUMING}
        try:
            wait_until(lambda: all(assigned_or_none(groups).values()), timeout, 0.5, "consumer groups assigned")
            return
        except TimeoutError:
            stuck = [s for g, s in groups.items() if not assigned_or_none([g])[g]]
        print(f"  notice: {', '.join(stuck)} worker(s) joined their group without partitions; restarting them once",
              flush=True)
        env = self.env()
        for service in stuck:
            worker = self.procs[f"{service}-worker"]
            worker.stop()
            worker.start(env)
        wait_until(lambda: all(assigned_or_none(groups).values()), 60, 0.5, "consumer groups assigned")

    def stop(self, timeout: float = 20) -> None:
        """All at once: SIGTERM every process group, then wait, then SIGKILL what is left."""
        for proc in self.procs.values():
            if proc.popen is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            proc.stop(max(0.1, deadline - time.monotonic()))
        self.procs.clear()


def assigned_partitions(groups: list[str] | dict[str, str]) -> dict[str, int]:
    """How many partitions the members of each consumer group hold right now."""
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=5000)
    try:
        described = admin.describe_groups(list(groups))
    finally:
        admin.close()
    return {group: sum(len(tp["partitions"]) for m in info.get("members", [])
                       for tp in (m.get("member_assignment") or {}).get("assigned_partitions", []))
            for group, info in described.items()}


def assigned_or_none(groups: list[str] | dict[str, str]) -> dict[str, int]:
    """assigned_partitions, or none for every group while a fresh broker has no group coordinator yet."""
    try:
        return assigned_partitions(groups)
    except KafkaError:
        return dict.fromkeys(groups, 0)


def group_lag(groups: tuple[str, ...] = tuple(f"iop-{s}" for s in CONSUMING)) -> int:
    """Records on the contract topics that the services' consumer groups have not yet committed."""
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=5000)
    probe = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None)
    try:
        committed = admin.list_group_offsets(list(groups))
        partitions = {tp for offsets in committed.values() for tp in offsets}
        ends = probe.end_offsets(list(partitions)) if partitions else {}
        return sum(max(0, ends.get(tp, 0) - (om.offset if om.offset >= 0 else 0))
                   for offsets in committed.values() for tp, om in offsets.items())
    finally:
        probe.close()
        admin.close()


def settle(timeout: float) -> float:
    """Wait until the services have consumed everything (a section's backlog must not slow the next)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if not group_lag():
                break
        except Exception:  # noqa: BLE001 - the broker busy or a group rebalancing: ask again
            pass
        time.sleep(1)
    return time.monotonic() - started


def _ready(service: str) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{PORTS[service]}/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False
