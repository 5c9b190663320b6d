"""The model stage: a thread that runs each window's batches through the encoder.

Takes windows from a bounded queue and puts scored windows on the next one; blocking on a full
outgoing queue is how back-pressure reaches the poll loop. Knows nothing of Kafka.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from worker.batcher import Window
from worker.decoding import Reason, Rejection
from worker.encoder import EncodedBatch
from worker.entries import Entry, ScoredWindow
from worker.errors import FirstFailure
from worker.labels import LabelSet
from worker.metrics import WorkerMetrics
from worker.threads import name_os_thread
from worker.tracing import Tracing

log = logging.getLogger(__name__)

STOP = None  # sentinel passed down the queues at shutdown


class Model(Protocol):
    dim: int
    label_set: LabelSet

    def encode(self, token_ids: list[list[int]], label_set: LabelSet | None = None) -> EncodedBatch: ...


class LabelSource(Protocol):
    """Where the model stage gets the label set for its next window (e.g. a `LabelsReloader`)."""

    def label_set(self, now: float) -> LabelSet: ...


class InferenceStage(threading.Thread):
    def __init__(
        self,
        model: Model,
        inbox: queue.Queue[Window[Entry] | None],
        outbox: queue.Queue[ScoredWindow | None],
        failure: FirstFailure,
        metrics: WorkerMetrics,
        tracing: Tracing | None = None,
        after_pass: Callable[[], None] | None = None,
        labels: LabelSource | None = None,
    ) -> None:
        super().__init__(name="model", daemon=True)
        self.labels = labels
        self.label_set = model.label_set
        self.after_pass = after_pass  # e.g. HeapTrimmer.after_pass
        self.tracing = tracing if tracing is not None and tracing.enabled else None
        self.model = model
        self.inbox = inbox
        self.outbox = outbox
        self.failure = failure
        self.metrics = metrics
        self.last_beat = time.monotonic()
        self.busy_since: float | None = None

    def run(self) -> None:
        name_os_thread(self.name)
        try:
            while True:
                self.last_beat = time.monotonic()
                try:
                    window = self.inbox.get(timeout=1.0)
                except queue.Empty:
                    self._refresh_labels()  # idle: take a new label set now, not in front of a window
                    continue
                if window is STOP:
                    self.outbox.put(STOP)
                    return
                self._refresh_labels()
                scored = self.score(window)
                self.outbox.put(scored)
                # The poll loop reads "idle" as: every window put in the inbox is done with.
                self.inbox.task_done()
        except BaseException as exc:  # noqa: BLE001 - carried to the poll loop
            log.exception("model stage failed")
            self.failure.record(exc)

    def _refresh_labels(self) -> None:
        """Between windows only: a window is scored and rendered with one label set."""
        if self.labels is not None:
            self.busy_since = time.monotonic()  # embedding a new label set runs the model
            self.label_set = self.labels.label_set(self.busy_since)
            self.busy_since = None

    def score(self, window: Window[Entry]) -> ScoredWindow:
        label_set = self.label_set
        count = len(window.entries)
        embeddings = np.zeros((count, self.model.dim), dtype=np.float32)
        scores = np.zeros((count, len(label_set.names)), dtype=np.float32)
        model_seconds = 0.0
        rejections: dict[int, Rejection] = {}
        for batch in window.batches:
            self.busy_since = time.monotonic()
            token_ids = [window.entries[i].token_ids for i in batch]
            started_ns = time.time_ns()
            started = time.perf_counter()
            try:
                encoded = self.model.encode(token_ids, label_set)  # type: ignore[arg-type]
                embeddings[batch] = encoded.embeddings
                scores[batch] = encoded.scores
            except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the stream
                log.warning("batch failed, retrying its events one by one", extra={"error": repr(exc)})
                rejections.update(self._score_one_by_one(window, batch, embeddings, scores, label_set))
            elapsed = time.perf_counter() - started
            if self.after_pass is not None:
                self.after_pass()
            self.busy_since = None
            self.last_beat = time.monotonic()
            model_seconds += elapsed
            self._record_batch(window, batch, elapsed, started_ns)
        return ScoredWindow(window, embeddings, scores, label_set, model_seconds, rejections)

    def _score_one_by_one(
        self, window: Window[Entry], batch: list[int], embeddings: np.ndarray, scores: np.ndarray, label_set: LabelSet
    ) -> dict[int, Rejection]:
        """Returns the entries the model failed on, by index."""
        rejections: dict[int, Rejection] = {}
        for i in batch:
            try:
                encoded = self.model.encode([window.entries[i].token_ids], label_set)  # type: ignore[list-item]
            except Exception as exc:  # noqa: BLE001
                rejections[i] = Rejection(Reason.MODEL_ERROR, f"the model failed on this text: {exc!r}"[:1000])
                continue
            embeddings[i] = encoded.embeddings[0]
            scores[i] = encoded.scores[0]
        return rejections

    def _record_batch(self, window: Window[Entry], batch: list[int], seconds: float, started_ns: int) -> None:
        lengths = [window.lengths[i] for i in batch]
        padded = max(lengths) * len(batch)  # type: ignore[type-var, operator]
        real = sum(lengths)  # type: ignore[arg-type]
        if self.tracing is not None and window.tag is not None:
            attributes = {"encoder_worker.batch.size": len(batch), "encoder_worker.batch.tokens": padded}
            self.tracing.child(window.tag, "encoder_worker.model", started_ns, started_ns + int(seconds * 1e9), attributes)
        self.metrics.batches.add(1)
        self.metrics.batch_size.record(len(batch))
        self.metrics.batch_tokens.record(padded)
        self.metrics.batch_padding_ratio.record(padded / max(real, 1))
        self.metrics.model_duration.record(seconds)
