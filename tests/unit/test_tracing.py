"""Nothing leaves a process unless an OTLP endpoint is configured; the standard variables switch it off."""
from __future__ import annotations

import pytest

from shared import tracing


@pytest.mark.parametrize(("env", "exporting"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
])
def test_spans_are_exported_only_to_a_configured_endpoint(monkeypatch, env: dict, exporting: bool) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert tracing._exporting() is exporting


def test_a_span_continues_the_trace_of_its_parent_and_is_what_an_outgoing_event_carries() -> None:
    tracing.configure("test")
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with tracing.span("process iop.intake.assessed", tracing.SpanKind.CONSUMER, parent):
        outgoing = tracing.traceparent()
        ids = tracing.trace_ids()
    assert outgoing is not None and outgoing.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert outgoing.split("-")[2] != "b7ad6b7169203331" and ids == (outgoing.split("-")[1], outgoing.split("-")[2])
    assert tracing.traceparent() is None and tracing.trace_ids() is None  # outside any span
