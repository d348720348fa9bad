"""The encounters service's worker process (`python -m services.encounters.worker`): relay and consumers."""
from __future__ import annotations

from services.encounters.handlers import worker_spec
from shared.config import Settings
from shared.events.worker import run_worker


def main() -> None:
    run_worker(worker_spec(Settings("encounters")))


if __name__ == "__main__":
    main()
