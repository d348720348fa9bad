"""Structured logs: one JSON object per line on stderr, carrying ids and codes, never PHI.

Callers pass ids as keyword fields: `log.info("careplan drafted", careplan_id=..., patient_id=...)`.
Free text must not contain names, birth dates, identifier values or answers. Any field name may be
used: one that the line or the LogRecord already has (`level`, `msg`, `name`, ...) is kept with a `_`
suffix, never in their place. An exception is logged as its type and its frames, never its message,
which may quote the data that caused it.
"""
from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any

from shared.tracing import trace_ids

_RECORD_KEYS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# What logging itself refuses in `extra` (LogRecord attributes) and what the record factory sets (service).
_RESERVED = _RECORD_KEYS | {"service", "trace_id", "span_id"}


def stack_of(exc_info: tuple) -> list[str]:
    """The frames of a traceback as `file:line in function`, without the exception's message or locals."""
    return [f"{frame.filename}:{frame.lineno} in {frame.name}" for frame in traceback.extract_tb(exc_info[2])]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if getattr(record, "service", None):
            line["service"] = record.service
        ids = trace_ids()  # the request's or the event's trace, so that a line leads to the whole journey
        if ids is not None:
            line["trace_id"], line["span_id"] = ids
        if record.exc_info:
            line["error"] = record.exc_info[0].__name__ if record.exc_info[0] else "unknown"
            line["stack"] = stack_of(record.exc_info)
        for key, value in vars(record).items():
            if key not in _RECORD_KEYS and key != "service" and not key.startswith("_"):
                while key in line:  # the line's own keys (level, msg, error ...) win; the field keeps a suffix
                    key += "_"
                line[key] = value
        return json.dumps(line, default=str, separators=(",", ":"))


def _field_name(name: str) -> str:
    while name in _RESERVED:
        name += "_"
    return name


class Log:
    """A thin logger whose keyword arguments become JSON fields."""

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def _log(self, level: int, msg: str, exc_info: bool | BaseException, fields: dict[str, Any], /) -> None:
        if self._logger.isEnabledFor(level):
            extra = {_field_name(k): v for k, v in fields.items()}
            self._logger.log(level, msg, extra=extra, exc_info=exc_info)

    def debug(self, msg: str, /, **fields: Any) -> None:
        self._log(logging.DEBUG, msg, False, fields)

    def info(self, msg: str, /, **fields: Any) -> None:
        self._log(logging.INFO, msg, False, fields)

    def warning(self, msg: str, /, **fields: Any) -> None:
        self._log(logging.WARNING, msg, False, fields)

    def error(self, msg: str, /, exc_info: bool | BaseException = False, **fields: Any) -> None:
        self._log(logging.ERROR, msg, exc_info, fields)


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
