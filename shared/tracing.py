"""Traces with OpenTelemetry: one trace from a partner's request through the outbox and Kafka to an EHR.

Every process has a tracer provider (so that spans have ids, events carry them in `traceparent`, and log
lines name their trace), but nothing leaves the process unless OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set: then spans go by OTLP over HTTP/protobuf to that collector.
The SDK's own variables keep their meaning: OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER
(and _ARG), OTEL_TRACES_EXPORTER=none, OTEL_SDK_DISABLED=true, OTEL_EXPORTER_OTLP_HEADERS, OTEL_BSP_*.

Spans carry ids and codes (route template, event type, consumer group, subscription id), never patient data.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import context, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["Span", "SpanKind", "configure", "span", "traceparent", "trace_ids"]

_PROPAGATOR = TraceContextTextMapPropagator()
_lock = threading.Lock()
_state: dict[str, Any] = {"provider": None}


def _exporting() -> bool:
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    exporters = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower()
    return bool(endpoint) and "otlp" in exporters


def configure(service: str) -> None:
    """This process's tracer provider, once: named iop-<service> unless OTEL_SERVICE_NAME says otherwise."""
    with _lock:
        if _state["provider"] is not None or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
            return
        resource = Resource.create({"service.name": f"iop-{service}", "service.namespace": "iop-suite"})
        provider = TracerProvider(resource=resource)
        if _exporting():
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        _state["provider"] = provider


def add_processor(processor: SpanProcessor) -> None:
    """Another destination for this process's spans (tests add an in-memory exporter)."""
    provider = _state["provider"]
    if provider is None:
        raise RuntimeError("tracing is not configured in this process")
    provider.add_span_processor(processor)


def _tracer() -> trace.Tracer:
    return trace.get_tracer("iop-suite")


def _parent(traceparent: str | None) -> context.Context | None:
    return _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None


@contextmanager
def span(name: str, kind: SpanKind = SpanKind.INTERNAL, parent: str | None = None,
         attributes: dict[str, Any] | None = None) -> Iterator[Span]:
    """A span around a block, child of `parent` (a W3C traceparent) when given, else of the current span."""
    with _tracer().start_as_current_span(name, context=_parent(parent), kind=kind, attributes=attributes) as s:
        yield s


def start(name: str, kind: SpanKind, parent: str | None = None, attributes: dict[str, Any] | None = None
          ) -> tuple[Span, object]:
    """A span made current until `finish`: for the request hooks of a web framework, which open and close apart."""
    s = _tracer().start_span(name, context=_parent(parent), kind=kind, attributes=attributes)
    return s, context.attach(trace.set_span_in_context(s))


def finish(s: Span, token: object) -> None:
    s.end()
    context.detach(token)


def traceparent() -> str | None:
    """The current span as a W3C traceparent, for an outgoing event or request; None outside any span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span in hex, for log lines; None outside any span."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
