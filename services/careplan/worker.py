"""The careplan service's worker process (`python -m services.careplan.worker`): relay and consumers."""
from __future__ import annotations

from services.careplan.handlers import worker_spec
from shared.config import Settings
from shared.events.worker import run_worker


def main() -> None:
    run_worker(worker_spec(Settings("careplan")))


if __name__ == "__main__":
    main()
