"""An aftercare delivery worker for the replica tests: the EHR dispatcher loop of the aftercare worker
(services/aftercare/worker_spec.py, with its claims) on a given store, without the consumer and relay.

    python -m tests.support.delivery_worker DB        (runs until SIGTERM)
"""
from __future__ import annotations

import signal
import sys
import threading

from services.aftercare.worker_spec import worker_spec
from shared.config import Settings
from shared.logs import configure


def main() -> None:
    settings = Settings("aftercare", database=sys.argv[1])
    configure(settings.log_level, "aftercare")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    dispatch, = worker_spec(settings).loops
    dispatch(stop)


if __name__ == "__main__":
    main()
