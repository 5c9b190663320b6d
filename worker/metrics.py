"""Every metric the worker reports, in one place (OpenTelemetry instruments).

Names are OpenTelemetry style; the Prometheus endpoint shows them with dots as underscores,
counters with a `_total` suffix, and units as suffixes (e.g. `encoder_worker_model_duration_seconds`).
Without a configured MeterProvider the OpenTelemetry API hands out no-op instruments, so the
stages can always call these.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from opentelemetry import metrics as otel_metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation

PREFIX = "encoder_worker"

# Seconds: from sub-millisecond batches on a GPU to multi-second ones on a CPU.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
RATIO_BUCKETS = (1.0, 1.05, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)

# name -> (kind, unit, description); the README's metrics table is generated from this.
METRICS: dict[str, tuple[str, str, str]] = {
    "events.consumed": ("counter", "{event}", "Records consumed, by topic."),
    "events.labelled": ("counter", "{event}", "Events whose outputs the broker acknowledged."),
    "events.dead_lettered": ("counter", "{event}", "Records sent to the dead-letter topic, by reason."),
    "batches": ("counter", "{batch}", "Forward passes run."),
    "batch.size": ("histogram", "{event}", "Events per forward pass."),
    "batch.tokens": ("histogram", "{token}", "Padded tokens per forward pass (longest × size)."),
    "batch.padding_ratio": ("histogram", "1", "Padded tokens / real tokens per forward pass."),
    "model.duration": ("histogram", "s", "Model time per forward pass (tokens on device to scores on host)."),
    "intake.duration": (
        "histogram", "s", "The poll thread's work on one polled chunk: decoding, validating, offset tracking, tokenizing."
    ),
    "tokenize.duration": ("histogram", "s", "The tokenizer's own time on one polled chunk's texts."),
    "publish.duration": ("histogram", "s", "Serialising and handing one window's outputs to the producer."),
    "end_to_end.latency": ("histogram", "s", "From the input record's timestamp to the delivery of its outputs."),
    "queue.depth": ("gauge", "{window}", "Windows waiting between stages, by stage (`model`, `publish`)."),
    "producer.delivery_errors": ("counter", "{record}", "Output records the broker did not accept."),
    "commits": ("counter", "{commit}", "Offset commits (or committed transactions), by result."),
    "rebalances": ("counter", "{rebalance}", "Partition assignments changes, by kind (`assign`, `revoke`, `lost`)."),
    "partitions.assigned": ("gauge", "{partition}", "Partitions assigned to this worker."),
    "partitions.paused": ("gauge", "{partition}", "Partitions paused by back-pressure."),
    "partitions.stalled": (
        "gauge", "{partition}", "Assigned, unpaused partitions with records waiting and nothing fetched for the liveness timeout."
    ),
    "labels.reloads": (
        "counter",
        "{reload}",
        "Labels file changes seen, by result (`ok`; `failed`: it did not load, the labels in use were kept).",
    ),
    "labels.active": ("gauge", "{label}", "Labels in the label set in use, by `labels_version`."),
    "consumer.lag": ("gauge", "{record}", "Records behind the end of each assigned partition (from librdkafka statistics)."),
}


def full_name(short: str) -> str:
    return f"{PREFIX}.{short}"


class WorkerMetrics:
    def __init__(self, meter: Meter | None = None) -> None:
        meter = meter or otel_metrics.get_meter("encoder_worker")
        self._lock = threading.Lock()
        self._gauges: dict[str, dict[tuple[tuple[str, str | int], ...], float]] = {}

        def counter(short: str):  # type: ignore[no-untyped-def]
            _, unit, description = METRICS[short]
            return meter.create_counter(full_name(short), unit=unit, description=description)

        def histogram(short: str, buckets: Iterable[float]):  # type: ignore[no-untyped-def]
            _, unit, description = METRICS[short]
            return meter.create_histogram(
                full_name(short), unit=unit, description=description, explicit_bucket_boundaries_advisory=list(buckets)
            )

        self.events_consumed = counter("events.consumed")
        self.events_labelled = counter("events.labelled")
        self.events_dead_lettered = counter("events.dead_lettered")
        self.batches = counter("batches")
        self.batch_size = histogram("batch.size", SIZE_BUCKETS)
        self.batch_tokens = histogram("batch.tokens", TOKEN_BUCKETS)
        self.batch_padding_ratio = histogram("batch.padding_ratio", RATIO_BUCKETS)
        self.model_duration = histogram("model.duration", DURATION_BUCKETS)
        self.intake_duration = histogram("intake.duration", DURATION_BUCKETS)
        self.tokenize_duration = histogram("tokenize.duration", DURATION_BUCKETS)
        self.publish_duration = histogram("publish.duration", DURATION_BUCKETS)
        self.end_to_end_latency = histogram("end_to_end.latency", DURATION_BUCKETS)
        self.delivery_errors = counter("producer.delivery_errors")
        self.commits = counter("commits")
        self.rebalances = counter("rebalances")
        self.labels_reloads = counter("labels.reloads")
        gauges = ("queue.depth", "partitions.assigned", "partitions.paused", "partitions.stalled", "consumer.lag", "labels.active")
        for short in gauges:
            _, unit, description = METRICS[short]
            self._gauges[short] = {}
            meter.create_observable_gauge(
                full_name(short), callbacks=[self._observer(short)], unit=unit, description=description
            )

    def set_gauge(self, short: str, value: float, **attributes: str | int) -> None:
        with self._lock:
            self._gauges[short][tuple(sorted(attributes.items()))] = value

    def replace_gauge(self, short: str, values: dict[tuple[tuple[str, str | int], ...], float]) -> None:
        """Set a gauge's whole series at once (series not named disappear), e.g. lag per partition."""
        with self._lock:
            self._gauges[short] = dict(values)

    def _observer(self, short: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                series = list(self._gauges[short].items())
            return [Observation(value, dict(attributes)) for attributes, value in series]

        return observe
