"""Traces: one span per batch window, linked to the input records' W3C `traceparent`.

The window span (`encoder_worker.batch`) has children for tokenization, each forward pass and
producing. An input record that carries a `traceparent` also gets a short span of its own in that
trace (`encoder_worker.event`, linked to the window span), and its outputs carry that span's
`traceparent`, so a downstream consumer continues the same trace. Outputs of records without one
carry the window span's.

Off unless a tracer is configured (OTLP endpoint or console exporter): then nothing here runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACE_HEADERS = ("traceparent", "tracestate")
# A window can hold hundreds of records; exporters and backends cap links per span anyway.
MAX_LINKS = 128

Headers = list[tuple[str, bytes]]

_propagator = TraceContextTextMapPropagator()


def wall_ns_from_monotonic(monotonic_s: float) -> int:
    return time.time_ns() - int((time.monotonic() - monotonic_s) * 1e9)


class Tracing:
    def __init__(self, tracer: Tracer | None) -> None:
        self.tracer = tracer
        self.enabled = tracer is not None

    def extract(self, headers: Headers | None) -> SpanContext | None:
        """The span context of a record's `traceparent` header, if it has a valid one."""
        if not headers:
            return None
        carrier = {
            key.lower(): value.decode("latin-1")
            for key, value in headers
            if value is not None and key.lower() in TRACE_HEADERS
        }
        if "traceparent" not in carrier:
            return None
        context = trace.get_current_span(_propagator.extract(carrier)).get_span_context()
        return context if context.is_valid else None

    def start_window(self, start_ns: int, links: Sequence[SpanContext], attributes: dict[str, int]) -> Span:
        assert self.tracer is not None
        return self.tracer.start_span(
            "encoder_worker.batch",
            start_time=start_ns,
            links=[Link(context) for context in links[:MAX_LINKS]],
            attributes={**attributes, "encoder_worker.links_dropped": max(0, len(links) - MAX_LINKS)},
        )

    def child(self, parent: Span, name: str, start_ns: int, end_ns: int, attributes: dict[str, int] | None = None) -> None:
        assert self.tracer is not None
        span = self.tracer.start_span(
            name, context=trace.set_span_in_context(parent), start_time=start_ns, attributes=attributes
        )
        span.end(end_time=end_ns)

    def event_span(self, parent: SpanContext, window: Span, start_ns: int, end_ns: int) -> SpanContext:
        """A span in the input record's own trace, linked to the window that processed it."""
        assert self.tracer is not None
        span = self.tracer.start_span(
            "encoder_worker.event",
            context=trace.set_span_in_context(NonRecordingSpan(parent)),
            start_time=start_ns,
            links=[Link(window.get_span_context())],
        )
        span.end(end_time=end_ns)
        return span.get_span_context()

    @staticmethod
    def output_headers(headers: Headers | None, context: SpanContext) -> Headers:
        """The input's headers with its trace headers replaced by `context`'s."""
        carrier: dict[str, str] = {}
        _propagator.inject(carrier, context=trace.set_span_in_context(NonRecordingSpan(context)))
        kept = [(key, value) for key, value in headers or [] if key.lower() not in TRACE_HEADERS]
        return kept + [(key, value.encode("latin-1")) for key, value in carrier.items()]
