"""The host path's own CPU per event, stage by stage: what bounds one interpreter in front of a GPU.

The worker's stages (intake, batcher, model stage, publisher and its delivery reports) are driven in
turn on one thread over real records consumed from the broker, with a model that does no work and
the worker's metrics set-up. Each stage's CPU time on that thread is its cost per event; all but the
tokenizer's run under the interpreter lock, so their sum bounds what one worker process can move
whatever the device (the tokenizer's Rust code releases the lock and, with a GPU, runs on several
threads). Embeddings are rendered as JSON at the widths of the models a user would run: the
near-free model's, MiniLM's and BERT-base's.
"""

from __future__ import annotations

import gc
import queue
import statistics
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.topics import INPUT_PARTITIONS, QUIET, TopicSet

# Embedding widths rendered: the near-free model's, MiniLM's, BERT-base's.
WIDTHS = {32: "near-free model", 384: "MiniLM", 768: "BERT-base"}
STAGES = ("intake", "tokenizer", "batcher", "model stage", "publish")
LOCKED = ("intake", "batcher", "model stage", "publish")  # run under the interpreter lock


@dataclass
class HostPath:
    """CPU seconds per stage over `events`, per repetition; `publish`/`model stage` per width."""

    events: int
    widths: dict[int, str] = field(default_factory=lambda: dict(WIDTHS))
    repetitions: list[dict[str, float]] = field(default_factory=list)  # stage (or "stage@width") -> seconds

    def us_per_event(self, stage: str) -> float:
        return statistics.median(r[stage] for r in self.repetitions) * 1e6 / self.events

    def stage_us(self, width: int) -> dict[str, float]:
        """µs per event of each stage, with the width's model stage and publisher."""
        return {stage: self.us_per_event(f"{stage}@{width}" if stage in ("model stage", "publish") else stage)
                for stage in STAGES}

    def locked_us(self, width: int) -> float:
        stages = self.stage_us(width)
        return sum(stages[stage] for stage in LOCKED)

    def ceiling(self, width: int) -> float:
        """Events/s one interpreter could move at most: one over the locked work per event."""
        return 1e6 / self.locked_us(width)


class NullModel:
    """`Encoder.encode`'s interface, doing nothing but hand back unit vectors of plausible values
    (zeros would make the JSON rendering unrealistically cheap)."""

    def __init__(self, dim: int, label_set: Any, rows: int = 4096) -> None:
        self.dim = dim
        self.label_set = label_set
        vectors = np.random.default_rng(7).standard_normal((rows, dim)).astype(np.float32)
        self._vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        self._scores = np.full((rows, len(label_set.names)), 1.0 / len(label_set.names), dtype=np.float32)

    def encode(self, token_ids: list[list[int]], label_set: Any = None):  # type: ignore[no-untyped-def]
        from worker.encoder import EncodedBatch

        rows = len(token_ids)
        return EncodedBatch(embeddings=self._vectors[:rows], scores=self._scores[:rows])


def consume_all(bootstrap: str, topic: str, events: int, timeout_s: float = 120.0) -> list[Any]:
    from confluent_kafka import Consumer, TopicPartition

    from worker.kafka_clients import poll_ready

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"host-path-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, **QUIET})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(INPUT_PARTITIONS)])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(messages) < events and time.monotonic() < deadline:
            messages += [m for m in poll_ready(consumer, 0.5, 500) if m.error() is None]
    finally:
        consumer.close()
    if len(messages) < events:
        raise RuntimeError(f"host path: consumed {len(messages)} of {events} records")
    return messages[:events]


def measure(bootstrap: str, topics: TopicSet, events: int, encoder: Any, batch: dict[str, int], chunk: int,
            repetitions: int) -> HostPath:
    """The stages in turn over the `events` records already in `topics.input`."""
    from confluent_kafka import Producer

    from worker.batcher import Batcher, BatchPolicy
    from worker.commits import AtLeastOnceCommits
    from worker.decoding import DecodePolicy
    from worker.errors import FirstFailure
    from worker.inference import InferenceStage
    from worker.intake import Intake
    from worker.kafka_clients import PRODUCER_DEFAULTS
    from worker.offsets import OffsetTracker
    from worker.outputs import OutputSerializer
    from worker.publisher import Publisher
    from worker.settings import EmbeddingEncoding, TelemetrySettings, TopicSettings
    from worker.telemetry import setup_telemetry

    messages = consume_all(bootstrap, topics.input, events)
    metrics = setup_telemetry(TelemetrySettings(), "host-path").metrics  # the worker's metrics, as it sets them up
    policy = BatchPolicy(batch["max_size"], batch["max_tokens"], 50, batch["sort_window"])
    outputs = TopicSettings(input=[topics.input], labels=topics.labels, embeddings=topics.embeddings,
                            dead_letter=topics.dead_letter)
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_DEFAULTS, **QUIET})
    result = HostPath(events)
    gc.collect()
    gc.freeze()  # as the worker does once it has loaded its model
    try:
        for _ in range(repetitions):
            seconds: dict[str, float] = dict.fromkeys(("intake", "tokenizer", "batcher"), 0.0)
            tracker = OffsetTracker()
            intake = Intake(DecodePolicy(), encoder.tokenize, encoder.options.max_length, False, tracker)
            batcher: Batcher[Any] = Batcher(policy)
            windows = []
            for start in range(0, len(messages), chunk):
                started = time.thread_time()
                entries, lengths = intake.accept(messages[start : start + chunk])
                accepted = time.thread_time()
                windows += batcher.add_all(entries, lengths, time.monotonic())
                seconds["intake"] += accepted - started - intake.tokenize_seconds
                seconds["tokenizer"] += intake.tokenize_seconds
                seconds["batcher"] += time.thread_time() - accepted
            started = time.thread_time()
            windows += batcher.flush()
            seconds["batcher"] += time.thread_time() - started
            for width in result.widths:
                failure = FirstFailure()
                stage = InferenceStage(NullModel(width, encoder.label_set), queue.Queue(), queue.Queue(), failure, metrics)
                serializer = OutputSerializer("bench", encoder.scoring, 3, EmbeddingEncoding.JSON, True)
                commits = AtLeastOnceCommits(tracker, failure, metrics, 1.0)
                publisher = Publisher(producer, serializer, outputs, commits, queue.Queue(), failure, metrics, "bench")
                started = time.thread_time()
                scored = [stage.score(window) for window in windows]
                scored_at = time.thread_time()
                for window in scored:
                    publisher.publish(window)
                if producer.flush(60):  # delivery reports are served here, on this thread
                    raise RuntimeError("host path: outputs left undelivered")
                seconds[f"model stage@{width}"] = scored_at - started
                seconds[f"publish@{width}"] = time.thread_time() - scored_at
                failure.raise_if_failed()
            result.repetitions.append(seconds)
    finally:
        gc.unfreeze()
    return result
