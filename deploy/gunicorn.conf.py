"""gunicorn settings shared by every service's web process; deploy/suite.sh adds the bind address and the app.

gunicorn runs in the foreground of its own session (suite.sh starts it with nohup) and logs to stderr, which
suite.sh sends to var/log/<service>-web.log: the application's JSON lines (requests, errors) and gunicorn's
own, in the same format. A daemonised gunicorn would send the application's stderr to /dev/null.
"""
from __future__ import annotations

import logging
import os
from typing import IO

from gunicorn.glogging import Logger

from shared.logs import JsonFormatter


class JsonLogger(Logger):
    """gunicorn's own lines (boot, worker exits, timeouts) as JSON lines like the application's."""

    def _set_handler(self, log: logging.Logger, output: str | None, fmt: logging.Formatter,
                     stream: IO[str] | None = None) -> None:
        super()._set_handler(log, output, JsonFormatter(), stream)


workers = int(os.environ.get("IOP_WEB_WORKERS") or 2)
threads = int(os.environ.get("IOP_WEB_THREADS") or 4)
errorlog = "-"
accesslog = None  # the application logs every write and every error itself (shared/web.py)
logger_class = JsonLogger
# gunicorn's own refusals (414, 431, a malformed request) as OperationOutcomes, like every other error.
worker_class = "shared.serving.FhirWorker"
# gunicorn's control socket defaults to one path per user ($HOME/.gunicorn/gunicorn.ctl), which every service
# and every instance would share, so that `gunicornc` would reach whichever bound it last.
control_socket_disable = True
