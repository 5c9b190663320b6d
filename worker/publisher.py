"""The publish stage: a thread that turns scored windows into output records and produces them.

At-least-once: a window's delivery reports are counted by one `WindowDelivery` (one bound method
is the callback of all its outputs: no object, lock or partial per record); when the last one is in,
the window's records are finished in the tracker at once, and the poll loop commits what the
tracker says is finished. Exactly-once: each window's outputs and its
input offsets are committed in one Kafka transaction.

Outputs are produced in window order, which is input order, so a partition's outputs keep the
order of its records. Never raises inside a librdkafka callback: failures go to `FirstFailure`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaException, Producer, TopicPartition

from worker.entries import Entry, ScoredWindow
from worker.errors import DeliveryError, FirstFailure, WorkerError
from worker.metrics import WorkerMetrics
from worker.offsets import OffsetTracker
from worker.outputs import OutputSerializer, dead_letter_headers
from worker.settings import TopicSettings
from worker.threads import name_os_thread
from worker.tracing import Tracing

log = logging.getLogger(__name__)

TRANSACTION_ATTEMPTS = 5
TRANSACTION_TIMEOUT_S = 60.0


class Publisher(threading.Thread):
    def __init__(
        self,
        producer: Producer,
        serializer: OutputSerializer,
        topics: TopicSettings,
        tracker: OffsetTracker,
        inbox: queue.Queue[ScoredWindow | None],
        failure: FirstFailure,
        metrics: WorkerMetrics,
        worker_id: str,
        group_metadata: Callable[[], Any] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        """`group_metadata` switches on exactly-once: it returns the consumer's group metadata."""
        super().__init__(name="publish", daemon=True)
        self.tracing = tracing if tracing is not None and tracing.enabled else None
        self.producer = producer
        self.serializer = serializer
        self.topics = topics
        self.tracker = tracker
        self.inbox = inbox
        self.failure = failure
        self.metrics = metrics
        self.worker_id = worker_id
        self.group_metadata = group_metadata
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
                if self.group_metadata is None:
                    self.publish(scored)
                else:
                    self.publish_transaction(scored)
                self.busy_since = None
                self.metrics.publish_duration.record(time.perf_counter() - started)
                span = scored.window.tag
                if self.tracing is not None and span is not None:
                    self.tracing.child(span, "encoder_worker.produce", started_ns, time.time_ns())
                    span.end()
        except BaseException as exc:  # noqa: BLE001 - carried to the poll loop
            log.exception("publish stage failed")
            self.failure.record(exc)

    # -- at-least-once -------------------------------------------------------------------------

    def publish(self, scored: ScoredWindow) -> None:
        rendered = list(self._render(scored))
        rejected = sum(1 for row in rendered if row[0].rejection is not None)
        outputs = rejected + (len(rendered) - rejected) * self.outputs_per_event
        # Counted before anything is produced: a report may arrive while the window is still produced.
        delivery = WindowDelivery(self, scored.window.entries, outputs)
        callback = delivery.delivered
        for entry, labels_value, embeddings_value, headers in rendered:
            if entry.rejection is not None:
                self._produce_dead_letter(entry, callback)
                continue
            if labels_value is not None:
                self._send(self.topics.labels, labels_value, entry.key, headers, callback)
            if embeddings_value is not None:
                self._send(self.topics.embeddings, embeddings_value, entry.key, headers, callback)
        if outputs == 0:
            self._finished(scored.window.entries)
        self.producer.poll(0)

    def _undelivered(self, entries: list[Entry], error: Any, message: Any) -> None:
        self.metrics.delivery_errors.add(1, {"topic": message.topic()})
        first, last = entries[0].source, entries[-1].source
        self.failure.record(
            DeliveryError(
                f"an output record (key {message.key()!r}) of the window {first.default_id()} … "
                f"{last.default_id()} was not delivered to {message.topic()!r}: {error.str()}"
            )
        )

    def _finished(self, entries: list[Entry]) -> None:
        """Every output of these entries is delivered (or committed): finish them, count them once."""
        self.tracker.finish([entry.offset for entry in entries])
        labelled = sum(1 for entry in entries if entry.rejection is None)
        if labelled:
            self.metrics.events_labelled.add(labelled)
        now_s = time.time()
        record = self.metrics.end_to_end_latency.record
        for entry in entries:
            if entry.source.timestamp_ms is not None:
                record(max(0.0, now_s - entry.source.timestamp_ms / 1000.0))

    # -- exactly-once --------------------------------------------------------------------------

    def publish_transaction(self, scored: ScoredWindow) -> None:
        rendered = list(self._render(scored))
        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            # After a rebalance (the usual cause of an aborted transaction) the partitions this worker
            # lost are another worker's, which resumes them from their committed offset: leave them out.
            rendered = [row for row in rendered if not row[0].offset.forgotten]
            if not rendered:
                return
            offsets = _next_offsets([entry for entry, _, _, _ in rendered])
            try:
                self.producer.begin_transaction()
                for entry, labels_value, embeddings_value, headers in rendered:
                    if entry.rejection is not None:
                        self._produce_dead_letter(entry, None)
                        continue
                    if labels_value is not None:
                        self._send(self.topics.labels, labels_value, entry.key, headers, None)
                    if embeddings_value is not None:
                        self._send(self.topics.embeddings, embeddings_value, entry.key, headers, None)
                self.producer.send_offsets_to_transaction(offsets, self.group_metadata(), TRANSACTION_TIMEOUT_S)  # type: ignore[misc]
                self._commit_transaction()
                break
            except KafkaException as exc:
                error = exc.args[0]
                if error.fatal() or not error.txn_requires_abort() or attempt == TRANSACTION_ATTEMPTS:
                    self.metrics.commits.add(1, {"result": "failed"})
                    raise WorkerError(f"transaction failed, stopping: {error.str()}") from exc
                log.warning("transaction aborted, retrying", extra={"attempt": attempt, "error": error.str()})
                self.producer.abort_transaction(TRANSACTION_TIMEOUT_S)
                time.sleep(min(2.0, 0.1 * 2**attempt))
        self.metrics.commits.add(1, {"result": "ok"})
        self._finished([entry for entry, _, _, _ in rendered])

    def _commit_transaction(self) -> None:
        while True:
            try:
                self.producer.commit_transaction(TRANSACTION_TIMEOUT_S)
                return
            except KafkaException as exc:
                if exc.args[0].retriable():
                    continue
                raise

    # -- shared --------------------------------------------------------------------------------

    def _render(self, scored: ScoredWindow):  # type: ignore[no-untyped-def]
        """(entry, labels value, embeddings value, headers) per entry, in window order.

        Values are None for an output that is off or an entry that was rejected.
        """
        entries = scored.window.entries
        serializer = self.serializer
        now_ns = time.time_ns()
        now_ms = now_ns // 1_000_000
        window_span = scored.window.tag if self.tracing is not None else None
        rows = [i for i, entry in enumerate(entries) if entry.rejection is None]
        if self.topics.labels and rows:
            top_indices, top_scores = serializer.top_labels(scored.scores[rows])
            winners = scored.label_set.winners(top_indices[:, 0], top_scores[:, 0])
        row_of = {i: n for n, i in enumerate(rows)}
        for i, entry in enumerate(entries):
            if entry.rejection is not None:
                yield entry, None, None, entry.headers
                continue
            source = entry.source.as_dict()
            labels_value = embeddings_value = None
            if self.topics.labels:
                n = row_of[i]
                labels_value = serializer.labels_value(
                    entry.event_id, scored.label_set, winners[n], top_indices[n], top_scores[n], source, now_ms  # type: ignore[arg-type]
                )
            if self.topics.embeddings:
                embeddings_value = serializer.embeddings_value(entry.event_id, scored.embeddings[i], source, now_ms)  # type: ignore[arg-type]
            yield entry, labels_value, embeddings_value, self._headers(entry, window_span, now_ns)

    def _headers(self, entry: Entry, window_span: Any, now_ns: int) -> Any:
        if window_span is None:
            return entry.headers
        assert self.tracing is not None
        if entry.trace_context is not None:
            context = self.tracing.event_span(entry.trace_context, window_span, entry.consumed_ns, now_ns)
        else:
            context = window_span.get_span_context()
        return self.tracing.output_headers(entry.headers, context)

    def _produce_dead_letter(self, entry: Entry, callback: Callable[..., None] | None) -> None:
        rejection = entry.rejection
        assert rejection is not None
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


def _next_offsets(entries: list[Entry]) -> list[TopicPartition]:
    """The offsets to commit with these entries' outputs: one past the last entry of each partition."""
    positions: dict[tuple[str, int], int] = {}
    for entry in entries:
        key = (entry.source.topic, entry.source.partition)
        positions[key] = max(positions.get(key, -1), entry.source.offset + 1)
    return [TopicPartition(topic, partition, offset) for (topic, partition), offset in positions.items()]


class WindowDelivery:
    """Counts one window's delivery reports (served on the publish thread by `producer.poll`)."""

    __slots__ = ("publisher", "entries", "remaining", "failed")

    def __init__(self, publisher: Publisher, entries: list[Entry], outputs: int) -> None:
        self.publisher = publisher
        self.entries = entries
        self.remaining = outputs
        self.failed = False

    def delivered(self, error: Any, message: Any) -> None:
        """librdkafka's delivery callback for every output of the window; never raises."""
        if error is not None:
            self.failed = True  # the window is never finished: nothing past it is committed
            self.publisher._undelivered(self.entries, error, message)
            return
        self.remaining -= 1
        if self.remaining == 0 and not self.failed:
            self.publisher._finished(self.entries)
