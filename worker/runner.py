"""The worker: the poll loop, and the lifecycle of the stages around it.

    consume → decode/validate → tokenize (intake) → batch (batcher)
        → [model queue] → inference thread → [publish queue] → publisher thread → commit

The poll loop never blocks on the model: closed windows go on a bounded queue; when it is full
the loop holds the next window and keeps polling (rebalances, errors, `max.poll.interval.ms`) one
record at a time, and pauses its partitions only if the model takes nothing for
`batch.pause_after_ms` (`worker.pausing`: a pause makes librdkafka re-fetch what it had
prefetched). How outputs become durable and offsets get committed is the commit protocol's
(`worker.commits`); librdkafka's statistics are read by `worker.consumer_stats`. This module wires
the stages, runs the poll loop and handles rebalances.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from worker.batcher import DEFAULT_PASS_OVERHEAD_TOKENS, Batcher, BatchPolicy, Window
from worker.commits import commit_protocol
from worker.consumer_stats import ConsumerStatistics
from worker.decoding import DecodePolicy
from worker.encoder import Encoder
from worker.entries import Entry, ScoredWindow
from worker.errors import FirstFailure, WorkerError
from worker.health import WorkerStatus
from worker.inference import STOP, InferenceStage
from worker.intake import Intake
from worker.kafka_clients import consumer_config, instance_id, poll_ready, producer_config
from worker.label_reload import LabelsReloader
from worker.memory import HeapTrimmer
from worker.metrics import WorkerMetrics
from worker.offsets import OffsetTracker
from worker.outputs import OutputSerializer
from worker.pausing import PartitionPauser, PauseTimer
from worker.publisher import Publisher
from worker.settings import InputFormat, Overlength, WorkerSettings
from worker.tracing import Tracing, wall_ns_from_monotonic

log = logging.getLogger(__name__)

# librdkafka's own log lines go through Python logging (and so the JSON formatter).
KAFKA_LOGGER = logging.getLogger("librdkafka")
POLL_CHUNK = 500
POLL_TIMEOUT_S = 0.1
BUSY_POLL_TIMEOUT_S = 0.005


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        encoder: Encoder,
        metrics: WorkerMetrics | None = None,
        tracing: Tracing | None = None,
        status: WorkerStatus | None = None,
    ) -> None:
        self.settings = settings
        self.encoder = encoder
        self.metrics = metrics or WorkerMetrics()
        self.tracing = tracing or Tracing(None)
        self.status = status or WorkerStatus()
        self.status.model_ready = True
        self.worker_id = instance_id(settings)
        batch = settings.batch
        overhead = batch.pass_overhead_tokens
        if overhead is None:
            measured = encoder.pass_overhead_tokens
            overhead = round(measured) if measured is not None else DEFAULT_PASS_OVERHEAD_TOKENS
        self.policy = BatchPolicy(
            batch.max_size, batch.max_tokens, batch.max_wait_ms, batch.sort_window, overhead, batch.close_when_idle
        )
        self.failure = FirstFailure()
        self.tracker = OffsetTracker()
        self.commits = commit_protocol(settings, self.tracker, self.failure, self.metrics)
        self.batcher: Batcher[Entry] = Batcher(self.policy)
        self.model_queue: queue.Queue[Window[Entry] | None] = queue.Queue(maxsize=batch.queue_depth)
        self.publish_queue: queue.Queue[ScoredWindow | None] = queue.Queue(maxsize=batch.queue_depth)
        self.held: deque[Window[Entry]] = deque()
        self.pauser: PartitionPauser | None = None
        self.pause_timer = PauseTimer(batch.pause_after_ms / 1000.0)
        self.statistics = ConsumerStatistics(
            self.status, self.metrics, settings.telemetry.liveness_timeout_s, self._active_partitions
        )
        self._draining_failed = False
        # Tokenizer time slices of the open window, for its trace span: (start ns, end ns, records).
        self._tokenize_slices: list[tuple[int, int, int]] = []
        self.consumer: Consumer | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        """Consume until `stop` is set or a failure; returns the process exit code."""
        settings = self.settings
        callbacks = {"error_cb": self._on_kafka_error, "logger": KAFKA_LOGGER}
        self.consumer = Consumer(
            {**consumer_config(settings), **callbacks, **self.commits.consumer_config(), "stats_cb": self.statistics.on_stats}
        )
        self.statistics.consumer = self.consumer
        self.pauser = PartitionPauser(self.consumer, on_change=self._on_partitions_changed)
        producer = Producer({**producer_config(settings), **callbacks})
        self.commits.start(producer)
        serializer = OutputSerializer(
            self.encoder.name,
            self.encoder.scoring,
            settings.output.top_k,
            settings.output.embedding_encoding,
            settings.model.normalize,
        )
        # The RSS now, after warm-up and before any event, is the level the heap is held near.
        trimmer = HeapTrimmer.above_current(settings.model.trim_headroom_mb << 20)
        inference = InferenceStage(
            self.encoder,
            self.model_queue,
            self.publish_queue,
            self.failure,
            self.metrics,
            self.tracing,
            after_pass=trimmer.after_pass if trimmer is not None else None,
            labels=self._labels_reloader(),
        )
        publisher = Publisher(
            producer,
            serializer,
            settings.topics,
            self.commits,
            self.publish_queue,
            self.failure,
            self.metrics,
            self.worker_id,
            tracing=self.tracing,
        )
        self.status.stages = [inference, publisher]
        intake = Intake(
            DecodePolicy(
                json_input=settings.input.format is InputFormat.JSON,
                max_record_bytes=settings.input.max_record_bytes,
                max_text_chars=settings.input.max_text_chars,
            ),
            self.encoder.tokenize,
            settings.model.max_length,
            settings.model.overlength is Overlength.DEAD_LETTER,
            self.tracker,
            self.tracing,
        )
        inference.start()
        publisher.start()
        self.consumer.subscribe(
            list(settings.topics.input), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        self.status.subscribed = True
        log.info(
            "worker started",
            extra={"topics": settings.topics.input, "worker_id": self.worker_id, "batch_policy": repr(self.policy)},
        )
        exit_code = 0
        try:
            while not stop.is_set():
                self._turn(intake)
            log.info("stopping: draining in-flight events")
            self.status.stopping = True
            self._drain()
            self._commit_now(handover=True)
        except Exception as exc:  # noqa: BLE001 - any failure: stop loudly, commit only what was delivered
            log.error("worker failed: %s", exc, extra={"error": str(exc)}, exc_info=not isinstance(exc, WorkerError))
            self._draining_failed = True
            self.failure.record(exc)  # stages stop producing; the drain on revocation is skipped
            exit_code = 1
            self._commit_now(handover=False)  # only what was delivered: the tracker guarantees it
        finally:
            self.status.stopping = True
            self._close(producer, [inference, publisher])
        return exit_code

    def _labels_reloader(self) -> LabelsReloader | None:
        """Watches the labels file, if the model scores one and reloading is on."""
        interval = self.settings.model.labels_reload_s
        if self.encoder.has_head or self.encoder.labels_file is None or interval <= 0:
            return None
        return LabelsReloader(
            self.encoder.labels_file,
            interval,
            self.encoder.label_set,
            self.encoder.embed_labels,
            self.metrics,
            now=time.monotonic(),
        )

    def _close(self, producer: Producer, stages: list[threading.Thread]) -> None:
        assert self.consumer is not None
        try:
            self.consumer.close()  # leaves the group; revocation finds nothing in flight
        except Exception as exc:  # noqa: BLE001 - closing must go on
            log.warning("consumer close failed", extra={"error": repr(exc)})
        self._put_blocking(self.model_queue, STOP, timeout=5.0)
        # A failed stage may never pass the stop marker on; the threads are daemons.
        join_timeout = 5.0 if self.failure.error is not None else self.settings.delivery.drain_timeout_s
        for stage in stages:
            stage.join(timeout=join_timeout)
        producer.flush(5.0)
        log.info("worker stopped")

    # -- the poll loop -------------------------------------------------------------------------

    def _turn(self, intake: Intake) -> None:
        assert self.consumer is not None
        self.status.poll_beat = time.monotonic()
        self.failure.raise_if_failed()
        self._release_held()
        assert self.pauser is not None
        if self.held and self.pause_timer.should_pause(time.monotonic()):
            self.pauser.hold()
        # While windows are held, one record a turn: the poll serves callbacks, and what librdkafka
        # has prefetched stays in its (bounded) queue instead of in the worker.
        messages = self._poll(self._poll_timeout(), 1 if self.held else POLL_CHUNK)
        self.pauser.settle()  # partitions assigned during that poll get the state the worker wants now
        if messages:
            good = [message for message in messages if not self._is_error(message)]
            if good:
                started_ns = time.time_ns()
                entries, lengths = intake.accept(good)
                ended_ns = time.time_ns()
                self.metrics.intake_duration.record((ended_ns - started_ns) / 1e9)
                self.metrics.tokenize_duration.record(intake.tokenize_seconds)
                for topic, count in _count_by_topic(good).items():
                    self.metrics.events_consumed.add(count, {"topic": topic})
                if self.tracing.enabled:
                    self._tokenize_slices.append((started_ns, ended_ns, len(good)))
                for window in self.batcher.add_all(entries, lengths, time.monotonic()):
                    self._submit(window)
        if self._model_has_room():
            # While the model is busy a window keeps filling past its wait: it could not start
            # sooner anyway, and a fuller window sorts into less padding.
            for window in self.batcher.poll(time.monotonic(), model_wants_window=self._model_wants_window()):
                self._submit(window)
        self.metrics.set_gauge("queue.depth", self.model_queue.qsize() + len(self.held), stage="model")
        self.metrics.set_gauge("queue.depth", self.publish_queue.qsize(), stage="publish")
        self.commits.commit_if_due(self.consumer)

    def _model_has_room(self) -> bool:
        return not self.held and not self.model_queue.full()

    def _model_wants_window(self) -> bool:
        """No window waiting for the model: the next one should be ready when it finishes the one in
        hand. Waiting until it had finished (an idle model) left it idle while the poll thread
        tokenized its current chunk (docs/benchmarks.md, "Tried and measured")."""
        return not self.held and self.model_queue.empty()

    def _poll_timeout(self) -> float:
        deadline = self.batcher.deadline()
        if self.held:
            return 0.0  # _release_held has just waited for the model
        if deadline is None:
            return POLL_TIMEOUT_S
        wait = min(POLL_TIMEOUT_S, max(0.0, deadline - time.monotonic()))
        if wait == 0.0 and not self._model_has_room():
            # A window is ready but the model is busy: look again soon, it may take it any moment.
            return BUSY_POLL_TIMEOUT_S
        if self.policy.close_when_idle and not self._model_wants_window():
            # The open window goes as soon as the model takes the waiting one: look again soon.
            return min(wait, BUSY_POLL_TIMEOUT_S)
        return wait

    def _poll(self, timeout: float, limit: int) -> list[Any]:
        assert self.consumer is not None
        return poll_ready(self.consumer, timeout, limit)

    def _is_error(self, message: Any) -> bool:
        error = message.error()
        if error is None:
            return False
        if error.code() == KafkaError._PARTITION_EOF:
            return True
        if error.fatal():
            raise WorkerError(f"consumer error: {error.str()}")
        log.warning("consumer error", extra={"error": error.str(), "topic": message.topic()})
        return True

    def _submit(self, window: Window[Entry]) -> None:
        if self.tracing.enabled:
            self._start_window_span(window)
        if not self.held:
            try:
                self.model_queue.put_nowait(window)
                return
            except queue.Full:
                pass
        if not self.held:
            log.debug("model busy: holding windows")
        self.held.append(window)
        self.pause_timer.holding(time.monotonic())

    def _start_window_span(self, window: Window[Entry]) -> None:
        links = [entry.trace_context for entry in window.entries if entry.trace_context is not None]
        attributes = {
            "encoder_worker.window.events": len(window.entries),
            "encoder_worker.window.batches": len(window.batches),
            "encoder_worker.window.padded_tokens": window.padded_tokens(),
        }
        span = self.tracing.start_window(wall_ns_from_monotonic(window.opened_at), links, attributes)
        for started_ns, ended_ns, records in self._tokenize_slices:
            self.tracing.child(span, "encoder_worker.tokenize", started_ns, ended_ns, {"encoder_worker.records": records})
        # The slice being processed may also feed the next window.
        self._tokenize_slices = self._tokenize_slices[-1:]
        window.tag = span

    def _release_held(self) -> None:
        """Hand held windows to the model as it takes them, waiting up to one poll interval.

        Meanwhile the loop polls one record a turn at most (or none, paused), mostly for callbacks;
        waiting on the queue instead of polling every few ms spares the model's cores ~200 wake-ups
        a second.
        """
        while self.held:
            try:
                self.model_queue.put(self.held[0], timeout=POLL_TIMEOUT_S)
            except queue.Full:
                return
            self.held.popleft()
            self.pause_timer.progressed(time.monotonic())
        self.pause_timer.clear()
        assert self.pauser is not None
        self.pauser.release()

    # -- draining and committing ---------------------------------------------------------------

    def _drain(self) -> None:
        """Push everything consumed through the stages and wait until its outputs are delivered."""
        deadline = time.monotonic() + self.settings.delivery.drain_timeout_s
        for window in self.batcher.flush():
            self.held.append(window)
        while self.held:
            if not self._put_blocking(self.model_queue, self.held[0], timeout=deadline - time.monotonic()):
                break
            self.held.popleft()
        while self.tracker.open_count() > 0 and self.failure.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        left = self.tracker.open_count()
        if left:
            log.warning("drain timed out; unfinished events will be reprocessed", extra={"events": left})
        if self.pauser is not None and not self.held:
            self.pause_timer.clear()
            self.pauser.release()

    def _put_blocking(self, target: queue.Queue[Any], item: Any, timeout: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            try:
                target.put(item, timeout=0.05)
                return True
            except queue.Full:
                if time.monotonic() >= deadline or (self.failure.error is not None and item is not STOP):
                    return False

    def _commit_now(self, handover: bool) -> None:
        if self.consumer is not None:
            self.commits.commit_now(self.consumer, handover)

    # -- rebalances (called from inside consume(), on the poll thread) -------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.commits.note_rebalance(consumer)
        self.metrics.rebalances.add(1, {"kind": "assign"})
        assert self.pauser is not None
        self.pauser.assigned(partitions)
        log.info("partitions assigned", extra={"partitions": _names(partitions)})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.commits.note_rebalance(consumer)
        self.metrics.rebalances.add(1, {"kind": "revoke"})
        if partitions and not self._draining_failed and self.failure.error is None:
            # Finish and commit what we hold before another worker takes these partitions over.
            self._drain()
            self._commit_now(handover=True)
        self.tracker.forget([(tp.topic, tp.partition) for tp in partitions])
        assert self.pauser is not None
        self.pauser.removed(partitions)
        log.info("partitions revoked", extra={"partitions": _names(partitions)})

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another worker may own them already: committing now could undo its progress.
        self.commits.note_rebalance(consumer)
        self.metrics.rebalances.add(1, {"kind": "lost"})
        dropped = self.tracker.forget([(tp.topic, tp.partition) for tp in partitions])
        assert self.pauser is not None
        were_paused = self.pauser.removed(partitions)
        log.warning(
            "partitions lost",
            extra={"partitions": _names(partitions), "unfinished_events": dropped, "paused": len(were_paused)},
        )

    def _on_partitions_changed(self, assigned: int, paused: int) -> None:
        self.status.assigned_partitions = assigned
        self.metrics.set_gauge("partitions.assigned", assigned)
        self.metrics.set_gauge("partitions.paused", paused)

    def _active_partitions(self) -> set[tuple[str, int]]:
        return self.pauser.active if self.pauser is not None else set()

    def _on_kafka_error(self, error: KafkaError) -> None:
        if error.fatal():
            self.failure.record(WorkerError(f"fatal Kafka client error: {error.str()}"))
            return
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.status.connected = False
        log.warning("kafka client error", extra={"error": error.str()})


def _count_by_topic(messages: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for message in messages:
        topic = message.topic()
        counts[topic] = counts.get(topic, 0) + 1
    return counts


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{tp.topic}:{tp.partition}" for tp in partitions]
