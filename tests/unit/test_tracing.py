from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from worker.tracing import MAX_LINKS, Tracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01".encode()


def tracing():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider.get_tracer("test")), exporter


def test_extracts_a_valid_traceparent_only():
    t, _ = tracing()
    context = t.extract([("other", b"x"), ("traceparent", PARENT)])
    assert context is not None and format(context.trace_id, "032x") == TRACE_ID
    assert t.extract([("traceparent", b"garbage")]) is None
    assert t.extract([("other", b"x")]) is None
    assert t.extract(None) is None


def test_outputs_continue_the_input_trace_through_an_event_span():
    t, exporter = tracing()
    parent = t.extract([("traceparent", PARENT)])
    window = t.start_window(1, [parent], {"encoder_worker.window.events": 1})
    t.child(window, "encoder_worker.model", 2, 3)
    context = t.event_span(parent, window, 1, 4)
    window.end()
    headers = t.output_headers([("traceparent", PARENT), ("tenant", b"acme"), ("tracestate", b"a=b")], context)
    assert ("tenant", b"acme") in headers
    [traceparent] = [value for key, value in headers if key == "traceparent"]
    assert traceparent.decode().split("-")[1] == TRACE_ID
    assert traceparent != PARENT  # a new span in the same trace
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert spans["encoder_worker.model"].parent.span_id == spans["encoder_worker.batch"].context.span_id
    assert format(spans["encoder_worker.event"].context.trace_id, "032x") == TRACE_ID
    assert spans["encoder_worker.event"].links[0].context.span_id == spans["encoder_worker.batch"].context.span_id
    assert format(spans["encoder_worker.batch"].links[0].context.trace_id, "032x") == TRACE_ID


def test_window_links_are_capped():
    t, exporter = tracing()
    parent = t.extract([("traceparent", PARENT)])
    t.start_window(1, [parent] * (MAX_LINKS + 5), {}).end()
    [span] = exporter.get_finished_spans()
    assert len(span.links) == MAX_LINKS
    assert span.attributes["encoder_worker.links_dropped"] == 5


def test_disabled_tracing_is_flagged_off():
    assert not Tracing(None).enabled
