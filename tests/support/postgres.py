"""A throwaway PostgreSQL server for the tests, run by deploy/postgres/postgres.sh, and fresh databases on it.

The server lives in a temporary directory that the postgres user can reach (the script runs it as that user
when the tests run as root), listens on port(18432), and runs without fsync: it is thrown away at the end.
IOP_TEST_STORE=postgresql runs the store-touching tests on it rather than on SQLite files.
"""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from shared.config import ROOT
from tests.support.ports import port

SCRIPT = ROOT / "deploy" / "postgres" / "postgres.sh"
ENGINES = ("sqlite", "postgresql")


def test_engine() -> str:
    """The engine of this test run's services and temporary stores: IOP_TEST_STORE, sqlite by default."""
    engine = (os.environ.get("IOP_TEST_STORE") or "sqlite").strip().lower()
    if engine not in ENGINES:
        raise ValueError(f"IOP_TEST_STORE must be one of {', '.join(ENGINES)}, not {engine!r}")
    return engine


class PgServer:
    _names = itertools.count(1)

    def __init__(self, pg_port: int | None = None) -> None:
        self.port = pg_port or port(18432)
        self.dir = Path(tempfile.mkdtemp(prefix=f"iop-pg-{self.port}-"))
        os.chmod(self.dir, 0o755)  # the postgres user must reach its data directory inside
        self.env = {**os.environ, "IOP_PG_DIR": str(self.dir / "cluster"), "IOP_PG_PORT": str(self.port),
                    "IOP_PG_DURABLE": "0", "IOP_PG_MAX_CONNECTIONS": "300"}

    def _script(self, *args: str) -> str:
        done = subprocess.run([str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"postgres.sh {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout.strip()

    def start(self) -> PgServer:
        self._script("start")
        return self

    def stop(self) -> None:
        self._script("stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://iop@127.0.0.1:{self.port}/{database}"

    def service_url(self, service: str) -> str:
        """The database the script made for a service: iop_<service>."""
        return self.url(f"iop_{service}")

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10)

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; its URL."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
