"""Two workers as many first write them, to compare against: simple confluent-kafka loops.

Both use the worker's own `Encoder` (same model, same tokenizer, same `max_length`) and write
the same two outputs per event (labels and embeddings as orjson), then flush the producer and
commit synchronously, so that nothing is committed before its outputs are delivered.

- naive: poll one message, run the model on it, produce, flush, commit;
- fixed-chunk: `consume(32)`, run the model once on the chunk padded to its longest text,
  produce, flush, commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer

from bench.rates import PaddedRates
from bench.topics import FAST_GROUP, QUIET, TopicSet
from worker.encoder import Encoder

CHUNK = 32


@dataclass(frozen=True)
class LoopResult(PaddedRates):
    name: str
    events: int
    seconds: float
    real_tokens: int
    padded_tokens: int
    cpu_seconds: float


class _Outputs:
    """Labels and embeddings records, serialised the way the worker does (orjson, numpy floats)."""

    def __init__(self, encoder: Encoder, producer: Producer, topics: TopicSet, top_k: int = 3) -> None:
        self.labels = encoder.labels
        self.labels_version = encoder.label_set.version
        self.model = encoder.name
        self.scoring = encoder.scoring
        self.producer = producer
        self.topics = topics
        self.top_k = min(top_k, len(self.labels))

    def produce(self, message, embedding: np.ndarray, scores: np.ndarray, event_id: str) -> None:  # type: ignore[no-untyped-def]
        source = {
            "topic": message.topic(),
            "partition": message.partition(),
            "offset": message.offset(),
            "timestamp_ms": message.timestamp()[1],
        }
        now_ms = int(time.time() * 1000)
        best = np.argsort(-scores)[: self.top_k]
        ranked = [{"label": self.labels[i], "score": float(scores[i])} for i in best]
        labels_value = orjson.dumps(
            {"id": event_id, "label": ranked[0]["label"], "score": ranked[0]["score"], "labels": ranked,
             "labels_version": self.labels_version, "scoring": self.scoring, "model": self.model, "source": source, "produced_at_ms": now_ms}
        )
        embeddings_value = orjson.dumps(
            {"id": event_id, "model": self.model, "dim": int(embedding.shape[0]), "normalized": True,
             "encoding": "json", "vector": embedding, "source": source, "produced_at_ms": now_ms},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        self.producer.produce(self.topics.labels, labels_value, message.key())
        self.producer.produce(self.topics.embeddings, embeddings_value, message.key())


def _clients(bootstrap: str, group: str, topics: TopicSet) -> tuple[Consumer, Producer]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
         "auto.offset.reset": "earliest", **FAST_GROUP, **QUIET}
    )
    consumer.subscribe([topics.input])
    return consumer, Producer({"bootstrap.servers": bootstrap, **QUIET})


def naive_worker(
    bootstrap: str, topics: TopicSet, group: str, encoder: Encoder, events: int, timeout_s: float
) -> LoopResult:
    """Poll one record, run the model on it, produce, commit: what many first write."""
    return _run_loop("naive (1 at a time)", lambda consumer: [consumer.poll(1.0)],
                     bootstrap, topics, group, encoder, events, timeout_s)


def fixed_chunk_worker(
    bootstrap: str, topics: TopicSet, group: str, encoder: Encoder, events: int, timeout_s: float
) -> LoopResult:
    """`consume(32)`, one pass padded to the chunk's longest text, produce, commit."""
    return _run_loop(f"fixed chunk (consume({CHUNK}))", lambda consumer: consumer.consume(CHUNK, 1.0),
                     bootstrap, topics, group, encoder, events, timeout_s)


def _run_loop(
    name: str,
    take: Callable[[Consumer], list[Any]],
    bootstrap: str,
    topics: TopicSet,
    group: str,
    encoder: Encoder,
    events: int,
    timeout_s: float,
) -> LoopResult:
    """Process what `take` returns as one batch at a time, synchronously; timed from the first record."""
    consumer, producer = _clients(bootstrap, group, topics)
    outputs = _Outputs(encoder, producer, topics)
    done = real = padded = 0
    started: float | None = None
    cpu_started = 0.0
    deadline = time.monotonic() + timeout_s
    try:
        while done < events and time.monotonic() < deadline:
            messages = [m for m in take(consumer) if m is not None and m.error() is None]
            if not messages:
                continue
            if started is None:
                started, cpu_started = time.perf_counter(), time.process_time()
            decoded = [orjson.loads(message.value()) for message in messages]
            token_ids = encoder.tokenize([event["text"] for event in decoded])
            encoded = encoder.encode(token_ids)  # one pass, padded to the longest text taken
            for row, (message, event) in enumerate(zip(messages, decoded)):
                outputs.produce(message, encoded.embeddings[row], encoded.scores[row], event["id"])
            producer.flush()
            consumer.commit(asynchronous=False)
            done += len(messages)
            lengths = [len(ids) for ids in token_ids]
            real += sum(lengths)
            padded += max(lengths) * len(lengths)
        seconds = time.perf_counter() - (started or time.perf_counter())
        cpu = time.process_time() - cpu_started
    finally:
        consumer.close()
    if done < events:
        raise RuntimeError(f"{name}: {done}/{events} events within {timeout_s:.0f}s")
    return LoopResult(name, done, seconds, real, padded, cpu)
