"""JSON log lines: any field name is safe, the line's own keys are never overwritten, errors carry no message."""
from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from shared import logs

LINE_KEYS = ("ts", "level", "logger", "msg", "service", "error", "stack")
RECORD_KEYS = tuple(sorted(vars(logging.makeLogRecord({})))) + ("message", "asctime")
# Every name the line or the LogRecord owns, and the names of the log methods' own parameters.
RESERVED = sorted({*LINE_KEYS, *RECORD_KEYS, "self", "exc_info", "fields"})


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """This process's logging as a service configures it, written to a buffer; restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogRecordFactory(), logs._service["name"])
    logs.configure("DEBUG", "careplan")
    out = io.StringIO()
    root.handlers[0].setStream(out)
    yield out
    root.handlers[:], _, factory, logs._service["name"] = saved
    root.setLevel(saved[1])
    logging.setLogRecordFactory(factory)


def parsed(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("name", RESERVED)
@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_a_field_named_like_a_key_of_the_line_or_record_is_kept_beside_it(lines: io.StringIO, level: str,
                                                                          name: str) -> None:
    own_parameter = level == "error" and name == "exc_info"  # a true value logs the exception being handled
    getattr(logs.get_logger("iop.test"), level)("no IOP plan", **{name: "field-value"})
    (line,) = parsed(lines)
    assert (line["ts"][-1], line["level"], line["logger"], line["msg"], line["service"]) == \
        ("Z", level, "iop.test", "no IOP plan", "careplan")
    if not own_parameter:
        (kept,) = [k for k, v in line.items() if v == "field-value"]
        assert kept.rstrip("_") == name


def test_an_error_logs_the_exception_type_and_frames_but_never_its_message(lines: io.StringIO) -> None:
    def handler() -> None:
        raise TypeError("Jane Doe, born 1970-01-01")

    try:
        handler()
    except TypeError as exc:
        logs.get_logger("iop.test").error("handler error", exc_info=exc, ce_id="e-1", error="mine")
    (line,) = parsed(lines)
    assert line["error"] == "TypeError" and line["error_"] == "mine" and line["ce_id"] == "e-1"
    assert any("in handler" in frame and "test_logs.py" in frame for frame in line["stack"])
    assert "Jane" not in lines.getvalue() and "1970" not in lines.getvalue()
