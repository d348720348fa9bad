"""A throwaway PostgreSQL server for the tests, run by deploy/postgres/postgres.sh, and fresh databases on it.

The server lives in a temporary directory that the postgres user can reach (the script runs it as that user
when the tests run as root), listens on port(18432), and runs without fsync: it is thrown away at the end.
IOP_TEST_STORE=postgresql runs the store-touching tests on it rather than on SQLite files.
"""
from __future__ import annotations

import atexit
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from shared.config import ROOT
from shared.fhir.store import Store, open_store
from tests.support.ports import port

SCRIPT = ROOT / "deploy" / "postgres" / "postgres.sh"
ENGINES = ("sqlite", "postgresql")
TEMPLATE = "iop_template"
_shared: PgServer | None = None


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

    def create_database(self, prefix: str = "t", migrated: bool = True) -> str:
        """A new database, its schema already migrated unless asked for an empty one; its URL."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        template = ""
        if migrated:
            self._template()
            template = f' TEMPLATE "{TEMPLATE}"'
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"{template}')
        return self.url(name)

    def _template(self) -> None:
        """A database migrated once, copied by create_database (quicker than migrating each new one)."""
        if getattr(self, "_templated", False):
            return
        from shared.fhir.store_pg import PostgresStore

        with self._admin() as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname=%s", (TEMPLATE,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
        store = PostgresStore(self.url(TEMPLATE))
        store.ping()  # opens the pool, which migrates
        store.close()
        self._templated = True

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def shared_server() -> PgServer:
    """This test process's throwaway server, started at the first call and removed at exit."""
    global _shared
    if _shared is None:
        _shared = PgServer().start()
        atexit.register(_shared.close)
    return _shared


def store_locator(sqlite_path: Path | str) -> str:
    """Where a test's fresh store lives on this run's engine: `sqlite_path`, or a new PostgreSQL database."""
    if test_engine() == "postgresql":
        return shared_server().create_database(Path(sqlite_path).stem.replace("-", "_"))
    return str(sqlite_path)


def service_store(env: dict[str, str], service: str) -> Store:
    """The store a running service's processes use, from their environment: its IOP_<SERVICE>_DB, else its file."""
    return open_store(env.get(f"IOP_{service.upper()}_DB") or str(Path(env["IOP_VAR_DIR"]) / f"{service}.db"))
