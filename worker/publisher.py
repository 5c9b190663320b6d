"""The publish stage: a thread that turns scored windows into output records and produces them.

It renders a window's outputs and produces them through the commit protocol (`worker.commits`),
which decides when they count as durable and how the input offsets get committed.

Outputs are produced in window order, which is input order, so a partition's outputs keep the
order of its records. Never raises inside a librdkafka callback: failures go to `FirstFailure`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaException, Producer

from worker.commits import Commits, DeliveryCallback, Row
from worker.decoding import Rejection
from worker.entries import Entry, ScoredWindow
from worker.errors import DeliveryError, FirstFailure
from worker.metrics import WorkerMetrics
from worker.outputs import OutputSerializer, dead_letter_headers
from worker.settings import TopicSettings
from worker.threads import name_os_thread
from worker.tracing import Tracing

log = logging.getLogger(__name__)


class Publisher(threading.Thread):
    def __init__(
        self,
        producer: Producer,
        serializer: OutputSerializer,
        topics: TopicSettings,
        commits: Commits,
        inbox: queue.Queue[ScoredWindow | None],
        failure: FirstFailure,
        metrics: WorkerMetrics,
        worker_id: str,
        tracing: Tracing | None = None,
    ) -> None:
        super().__init__(name="publish", daemon=True)
        self.tracing = tracing if tracing is not None and tracing.enabled else None
        self.producer = producer
        self.serializer = serializer
        self.topics = topics
        self.commits = commits
        self.inbox = inbox
        self.failure = failure
        self.metrics = metrics
        self.worker_id = worker_id
        self.outputs_per_event = int(bool(topics.labels)) + int(bool(topics.embeddings))
        self.last_beat = time.monotonic()
        self.busy_since: float | None = None

    def run(self) -> None:
        name_os_thread(self.name)
        try:
            while True:
                self.last_beat = time.monotonic()
                self.producer.poll(0)
                try:
                    scored = self.inbox.get(timeout=0.05)
                except queue.Empty:
                    continue
                if scored is None:
                    self.producer.flush()
                    return
                if self.failure.error is not None:
                    continue  # stopping: produce nothing more, drain the queue
                started = time.perf_counter()
                started_ns = time.time_ns()
                self.busy_since = time.monotonic()
                self.publish(scored)
                self.busy_since = None
                self.metrics.publish_duration.record(time.perf_counter() - started)
                span = scored.window.tag
                if self.tracing is not None and span is not None:
                    self.tracing.child(span, "encoder_worker.produce", started_ns, time.time_ns())
                    span.end()
        except BaseException as exc:  # noqa: BLE001 - carried to the poll loop
            log.exception("publish stage failed")
            self.failure.record(exc)

    def publish(self, scored: ScoredWindow) -> None:
        rows = self._render(scored)
        rejected = sum(1 for row in rows if row[1] is not None)
        outputs = rejected + (len(rows) - rejected) * self.outputs_per_event
        self.commits.deliver(rows, outputs, self._produce, self._finished)
        self.producer.poll(0)

    def _produce(self, rows: Sequence[Row], callback: DeliveryCallback | None) -> None:
        labels_topic, embeddings_topic = self.topics.labels, self.topics.embeddings
        produce = self.producer.produce
        options = {} if callback is None else {"on_delivery": callback}
        for entry, rejection, labels_value, embeddings_value, headers in rows:
            if rejection is not None:
                self._produce_dead_letter(entry, rejection, callback)
                continue
            # One plain call per output; `_send` (which serves a full queue) only when it is full.
            for topic, value in ((labels_topic, labels_value), (embeddings_topic, embeddings_value)):
                if value is None:
                    continue
                try:
                    produce(topic, value, entry.key, headers=headers, **options)
                except (BufferError, KafkaException):
                    self._send(topic, value, entry.key, headers, callback)

    def _finished(self, rows: Sequence[Row]) -> None:
        """Every output of these rows is durable: count them once."""
        labelled = sum(1 for row in rows if row[1] is None)
        if labelled:
            self.metrics.events_labelled.add(labelled)
        now_ms = time.time() * 1000.0
        record = self.metrics.end_to_end_latency.record
        for row in rows:
            timestamp_ms = row[0].source.timestamp_ms
            if timestamp_ms is not None:
                record(max(0.0, now_ms - timestamp_ms) / 1000.0)

    # -- shared --------------------------------------------------------------------------------

    def _render(self, scored: ScoredWindow) -> list[Row]:
        """(entry, rejection, labels value, embeddings value, headers) per entry, in window order.

        Values are None for an output that is off or an entry that was rejected (by intake or by
        the model). The label columns come from numpy once per window; the loop only fills records.
        """
        entries = scored.window.entries
        serializer = self.serializer
        label_set = scored.label_set
        now_ns = time.time_ns()
        now_ms = now_ns // 1_000_000
        window_span = scored.window.tag if self.tracing is not None else None
        rejections = scored.rejections()
        good = [i for i in range(len(entries)) if i not in rejections] if rejections else range(len(entries))
        labels_on, embeddings_on = bool(self.topics.labels), bool(self.topics.embeddings)
        if labels_on and good:
            winners, top_names, top_scores = serializer.label_columns(scored.scores[good], label_set)
        rows: list[Row] = [None] * len(entries)  # type: ignore[list-item]
        for i, rejection in rejections.items():
            rows[i] = (entries[i], rejection, None, None, entries[i].headers)
        for n, i in enumerate(good):
            entry = entries[i]
            source_dict = entry.source.as_dict()
            labels_value = embeddings_value = None
            if labels_on:
                labels_value = serializer.labels_value(
                    entry.event_id, label_set, winners[n], top_names[n], top_scores[n], source_dict, now_ms  # type: ignore[arg-type]
                )
            if embeddings_on:
                embeddings_value = serializer.embeddings_value(entry.event_id, scored.embeddings[i], source_dict, now_ms)  # type: ignore[arg-type]
            headers = entry.headers if window_span is None else self._headers(entry, window_span, now_ns)
            rows[i] = (entry, None, labels_value, embeddings_value, headers)
        return rows

    def _headers(self, entry: Entry, window_span: Any, now_ns: int) -> Any:
        """The entry's headers with its trace context (tracing on: `window_span` is the window's span)."""
        assert self.tracing is not None
        if entry.trace_context is not None:
            context = self.tracing.event_span(entry.trace_context, window_span, entry.consumed_ns, now_ns)
        else:
            context = window_span.get_span_context()
        return self.tracing.output_headers(entry.headers, context)

    def _produce_dead_letter(self, entry: Entry, rejection: Rejection, callback: Callable[..., None] | None) -> None:
        self.metrics.events_dead_lettered.add(1, {"reason": rejection.reason})
        log.info(
            "record dead-lettered",
            extra={
                "topic": entry.source.topic,
                "partition": entry.source.partition,
                "offset": entry.source.offset,
                "event_id": entry.event_id,
                "reason": rejection.reason,
                "error": rejection.message,
            },
        )
        headers = dead_letter_headers(entry.headers, rejection.reason, rejection.message, entry.source, self.worker_id)
        self._send(self.topics.dead_letter, entry.value, entry.key, headers, callback)

    def _send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Any,
        callback: Callable[..., None] | None,
    ) -> None:
        while True:
            try:
                if callback is None:
                    self.producer.produce(topic, value, key, headers=headers)
                else:
                    self.producer.produce(topic, value, key, headers=headers, on_delivery=callback)
                return
            except BufferError:
                # The producer's queue is full: serve delivery reports until there is room.
                self.producer.poll(0.1)
            except KafkaException as exc:
                self.metrics.delivery_errors.add(1, {"topic": topic})
                raise DeliveryError(f"the producer refused a record for {topic!r}: {exc.args[0].str()}") from exc

