"""Configuration from the environment: IOP_* variables and KAFKA_BOOTSTRAP_SERVERS.

Every variable is documented in the README; defaults suit a single machine.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SERVICE_PORTS = {"intake": 8081, "careplan": 8082, "encounters": 8083, "aftercare": 8084}
KAFKA_PORT = 9092
# FULL syncs the WAL on every commit; NORMAL only at checkpoints, so a power loss may take the last commits.
SQLITE_SYNCHRONOUS = ("FULL", "NORMAL")
# How long a busy consumer lets records gather before its next fetch. Careplan and encounters answer a
# partner's intake (plan, sessions) and fetch at once; EHR deliveries can wait a little to be fetched together.
CONSUMER_LINGER_MS = {"aftercare": 20}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def kafka_bootstrap() -> str:
    """KAFKA_BOOTSTRAP_SERVERS, else the local broker wherever IOP_KAFKA_PORT puts it."""
    return env_str("KAFKA_BOOTSTRAP_SERVERS", "") or f"127.0.0.1:{env_int('IOP_KAFKA_PORT', KAFKA_PORT)}"


def redact_url(locator: str) -> str:
    """A store locator fit for a log line or a status: a URL's password replaced by ***."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", locator)


def sqlite_synchronous() -> str:
    """IOP_SQLITE_SYNCHRONOUS, refused by name unless it is one the README explains."""
    raw = env_str("IOP_SQLITE_SYNCHRONOUS", "")
    value = raw.strip().upper() or "FULL"
    if value not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"IOP_SQLITE_SYNCHRONOUS must be one of {', '.join(SQLITE_SYNCHRONOUS)}, not {raw!r}")
    return value


@dataclass
class Settings:
    """What one service process needs to know about its surroundings."""

    service: str
    var_dir: Path = field(default_factory=lambda: Path(env_str("IOP_VAR_DIR", str(ROOT / "var"))))
    database: str = ""
    base_url: str = ""
    kafka_bootstrap: str = field(default_factory=kafka_bootstrap)
    sqlite_synchronous: str = field(default_factory=sqlite_synchronous)
    max_body_bytes: int = field(default_factory=lambda: env_int("IOP_MAX_BODY_BYTES", 5 * 1024 * 1024))
    log_level: str = field(default_factory=lambda: env_str("IOP_LOG_LEVEL", "INFO"))
    consumer_max_attempts: int = field(default_factory=lambda: env_int("IOP_CONSUMER_MAX_ATTEMPTS", 5))
    consumer_backoff_ms: int = field(default_factory=lambda: env_int("IOP_CONSUMER_BACKOFF_MS", 200))
    relay_poll_ms: int = field(default_factory=lambda: env_int("IOP_RELAY_POLL_MS", 5))
    relay_lease_s: float = field(default_factory=lambda: float(env_str("IOP_RELAY_LEASE_S", "5")))
    work_claim_s: float = field(default_factory=lambda: float(env_str("IOP_WORK_CLAIM_S", "15")))
    event_validation: str = field(default_factory=lambda: env_str("IOP_EVENT_VALIDATION", "structure"))
    consumer_linger_ms: int = -1  # from IOP_<SERVICE>_LINGER_MS, defaults in CONSUMER_LINGER_MS
    schedule_weeks: int = field(default_factory=lambda: env_int("IOP_SCHEDULE_WEEKS", 1))
    schedule_sweep_s: int = field(default_factory=lambda: env_int("IOP_SCHEDULE_SWEEP_S", 3600))
    program_tz: str = field(default_factory=lambda: env_str("IOP_PROGRAM_TZ", "UTC"))
    delivery_backoff_base_s: float = field(default_factory=lambda: float(env_str("IOP_DELIVERY_BACKOFF_BASE_S", "2")))
    delivery_backoff_cap_s: float = field(default_factory=lambda: float(env_str("IOP_DELIVERY_BACKOFF_CAP_S", "900")))
    delivery_give_up_hours: float = field(default_factory=lambda: float(env_str("IOP_DELIVERY_GIVE_UP_HOURS", "24")))
    checkin_sweep_s: int = field(default_factory=lambda: env_int("IOP_CHECKIN_SWEEP_S", 300))
    auth_issuer: str = field(default_factory=lambda: env_str("IOP_AUTH_ISSUER", "iop-suite"))
    auth_audience: str = field(default_factory=lambda: env_str("IOP_AUTH_AUDIENCE", "iop-suite"))
    auth_leeway_s: int = field(default_factory=lambda: env_int("IOP_AUTH_LEEWAY_S", 30))
    auth_hs256_secret: str = field(default_factory=lambda: env_str("IOP_AUTH_HS256_SECRET", ""))
    auth_jwks: str = field(default_factory=lambda: env_str("IOP_AUTH_JWKS", ""))
    auth_open_paths: str = field(default_factory=lambda: env_str("IOP_AUTH_OPEN_PATHS", "/healthz,/readyz,/metrics"))
    kafka_required: bool = field(default_factory=lambda: env_bool("IOP_READY_REQUIRES_KAFKA", False))
    smart_clients: str = field(default_factory=lambda: env_str("IOP_SMART_CLIENTS", ""))
    smart_signing_key: str = field(default_factory=lambda: env_str("IOP_SMART_SIGNING_KEY", ""))
    smart_issuer: str = field(default_factory=lambda: env_str("IOP_SMART_ISSUER", "iop-suite-smart"))
    smart_token_ttl_s: int = field(default_factory=lambda: env_int("IOP_SMART_TOKEN_TTL_S", 300))
    smart_token_url: str = field(default_factory=lambda: env_str("IOP_SMART_TOKEN_URL", ""))

    def __post_init__(self) -> None:
        prefix = f"IOP_{self.service.upper()}_"
        if not self.database:
            self.database = env_str(prefix + "DB", str(self.var_dir / f"{self.service}.db"))
        if not self.base_url:
            self.base_url = env_str(prefix + "BASE_URL", f"http://127.0.0.1:{self.port}/fhir").rstrip("/")
        if self.consumer_linger_ms < 0:
            self.consumer_linger_ms = env_int(prefix + "LINGER_MS", CONSUMER_LINGER_MS.get(self.service, 0))
        if self.event_validation not in ("structure", "full"):
            raise ValueError(f"IOP_EVENT_VALIDATION must be 'structure' or 'full', not {self.event_validation!r}")

    @property
    def port(self) -> int:
        return env_int(f"IOP_{self.service.upper()}_PORT", SERVICE_PORTS.get(self.service, 8080))

    @property
    def worker_metrics_port(self) -> int:
        """Where the worker serves /metrics: IOP_<SERVICE>_WORKER_METRICS_PORT, else IOP_WORKER_METRICS_PORT; 0 none."""
        return env_int(f"IOP_{self.service.upper()}_WORKER_METRICS_PORT", env_int("IOP_WORKER_METRICS_PORT", 0))


def describe(service: str) -> str:
    """One service's effective settings where they concern the deployment (no secrets)."""
    s = Settings(service)
    return (f"{service:<11} port={s.port} base_url={s.base_url} kafka={s.kafka_bootstrap} db={redact_url(s.database)}"
            f" sqlite_synchronous={s.sqlite_synchronous}")


def main(argv: list[str] | None = None) -> int:
    """`python -m shared.config [service ...]`: what each service would run with, or which variable is wrong."""
    try:
        lines = [describe(service) for service in (argv or list(SERVICE_PORTS))]
    except ValueError as exc:
        print(f"configuration: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
