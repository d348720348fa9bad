"""Structured logs: one JSON object per line on stderr, carrying ids and codes, never PHI.

Callers pass ids as keyword fields: `log.info("careplan drafted", careplan_id=..., patient_id=...)`.
Free text must not contain names, birth dates, identifier values or answers.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_RESERVED = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")})
        if record.exc_info:
            line["error"] = record.exc_info[0].__name__ if record.exc_info[0] else "unknown"
        return json.dumps(line, default=str, separators=(",", ":"))


class Log:
    """A thin logger whose keyword arguments become JSON fields."""

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def _log(self, level: int, msg: str, exc_info: bool = False, **fields: Any) -> None:
        if self._logger.isEnabledFor(level):
            # A field named like a LogRecord attribute ("created", "name") would be refused: suffix it.
            extra = {(f"{k}_" if k in _RESERVED or k == "message" else k): v for k, v in fields.items()}
            self._logger.log(level, msg, extra=extra, exc_info=exc_info)

    def debug(self, msg: str, **fields: Any) -> None:
        self._log(logging.DEBUG, msg, **fields)

    def info(self, msg: str, **fields: Any) -> None:
        self._log(logging.INFO, msg, **fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self._log(logging.WARNING, msg, **fields)

    def error(self, msg: str, exc_info: bool = False, **fields: Any) -> None:
        self._log(logging.ERROR, msg, exc_info=exc_info, **fields)


def get_logger(name: str) -> Log:
    return Log(name)


_service = {"name": ""}
_base_factory = logging.getLogRecordFactory()


def _record_with_service(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    if _service["name"]:
        record.service = _service["name"]
    return record


def configure(level: str = "INFO", service: str = "") -> None:
    """JSON lines on stderr for this process; every record carries the service name. Safe to call again."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("kafka", "werkzeug", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _service["name"] = service
    logging.setLogRecordFactory(_record_with_service)
