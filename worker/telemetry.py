"""OpenTelemetry set-up: metrics for the Prometheus endpoint (and OTLP), traces when configured.

Called once, by the entry point. Providers are built here and passed down rather than installed
globally, so that a process can hold more than one worker (tests, the demo) without clashes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
from prometheus_client import CollectorRegistry

from worker.metrics import WorkerMetrics
from worker.settings import TelemetrySettings
from worker.tracing import Tracing

log = logging.getLogger(__name__)


@dataclass
class Telemetry:
    metrics: WorkerMetrics
    tracing: Tracing
    registry: CollectorRegistry
    meter_provider: MeterProvider
    tracer_provider: TracerProvider | None

    def shutdown(self) -> None:
        # Flushes pending spans and OTLP metrics; the Prometheus registry needs nothing.
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def setup_telemetry(
    settings: TelemetrySettings, worker_id: str, extra_span_processors: list[SpanProcessor] | None = None
) -> Telemetry:
    resource = Resource.create({"service.name": settings.service_name, "service.instance.id": worker_id})
    registry = CollectorRegistry()
    readers: list[MetricReader] = [PrometheusMetricReader(registry=registry)]
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(
            PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=_otlp_url(settings.otlp_endpoint, "metrics")))
        )
    # No exemplars: the worker records no measurement inside an active span, so the default
    # trace-based filter never keeps one, yet it is asked on every record (a third of a
    # histogram record's cost, paid per event for `end_to_end.latency`).
    meter_provider = MeterProvider(metric_readers=readers, resource=resource, exemplar_filter=AlwaysOffExemplarFilter())
    metrics = WorkerMetrics(meter_provider.get_meter("encoder_worker"))

    processors: list[SpanProcessor] = list(extra_span_processors or [])
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processors.append(BatchSpanProcessor(OTLPSpanExporter(endpoint=_otlp_url(settings.otlp_endpoint, "traces"))))
    if settings.console_traces:
        processors.append(SimpleSpanProcessor(ConsoleSpanExporter()))
    tracer_provider = None
    if processors:
        tracer_provider = TracerProvider(resource=resource)
        for processor in processors:
            tracer_provider.add_span_processor(processor)
    tracing = Tracing(tracer_provider.get_tracer("encoder_worker") if tracer_provider else None)
    log.info(
        "telemetry ready",
        extra={"otlp_endpoint": settings.otlp_endpoint, "tracing": tracing.enabled},
    )
    return Telemetry(metrics, tracing, registry, meter_provider, tracer_provider)


def _otlp_url(endpoint: str, signal: str) -> str:
    """The OTLP/HTTP convention: a base endpoint gets `/v1/<signal>` appended."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(f"/v1/{signal}") else f"{endpoint}/v1/{signal}"
