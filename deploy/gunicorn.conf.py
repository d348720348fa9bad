"""gunicorn settings shared by every service's web process; deploy/suite.sh adds the bind address and the app.

gunicorn runs in the foreground of its own session (suite.sh starts it with nohup) and logs to stderr, which
suite.sh sends to var/log/<service>-web.log: the application's JSON lines (requests, errors) and gunicorn's
own, in the same format. A daemonised gunicorn would send the application's stderr to /dev/null.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import IO, Any

from gunicorn.glogging import Logger

from shared.logs import JsonFormatter


class JsonLogger(Logger):
    """gunicorn's own lines (boot, worker exits, timeouts) as JSON lines like the application's."""

    def _set_handler(self, log: logging.Logger, output: str | None, fmt: logging.Formatter,
                     stream: IO[str] | None = None) -> None:
        super()._set_handler(log, output, JsonFormatter(), stream)


workers = int(os.environ.get("IOP_WEB_WORKERS") or 2)
threads = int(os.environ.get("IOP_WEB_THREADS") or 4)
# An idle keep-alive connection stays open 30 s, longer than HAProxy keeps one to a replica (10 s) and than a
# client's pause between two requests usually lasts: the side that closes an idle connection is the client's,
# not the server racing a client that reuses it (gunicorn's 2 s default had a request sent on a connection the
# server was closing come back as a connection reset, not an answer).
keepalive = 30
errorlog = "-"
accesslog = None  # the application logs every write and every error itself (shared/web.py)
logger_class = JsonLogger
# gunicorn's own refusals (414, 431, a malformed request) as OperationOutcomes, like every other error.
worker_class = "shared.serving.FhirWorker"
# gunicorn's control socket defaults to one path per user ($HOME/.gunicorn/gunicorn.ctl), which every service
# and every instance would share, so that `gunicornc` would reach whichever bound it last.
control_socket_disable = True



def _metrics_dir() -> Path:
    """var/metrics/<service>-web, the service read from the app gunicorn is asked to serve (services.<name>.app)."""
    app = next((arg for arg in reversed(sys.argv) if arg.startswith("services.") and ".app:" in arg), "")
    service = app.split(".")[1] if app else "web"
    var = Path(os.environ.get("IOP_VAR_DIR") or Path(__file__).resolve().parent.parent / "var")
    return var / "metrics" / (os.environ.get("IOP_REPLICA") or f"{service}-web")  # a replica's own directory


# Every web process writes its metrics under one directory of the service, so that a scrape of any of them adds
# up all (prometheus_client's multiprocess mode). Set here, when gunicorn reads this file: before it loads the
# worker class, which imports prometheus_client, and the mode is chosen at that import.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_metrics_dir()))
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)


def on_starting(server: Any) -> None:
    """Counts start again from zero with the service: what earlier processes left is removed."""
    path = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """A web process that exits leaves its counters to the sum; its live gauges go with it."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
