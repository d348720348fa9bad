"""The aftercare service's worker process (`python -m services.aftercare.worker`): relay and consumers."""
from __future__ import annotations

from services.aftercare.worker_spec import worker_spec
from shared.config import Settings
from shared.events.worker import run_worker


def main() -> None:
    run_worker(worker_spec(Settings("aftercare")))


if __name__ == "__main__":
    main()
