"""Kafka plumbing for the benchmark: the broker, fresh topics, filling them, watching commits.

Tansu's ListOffsets (and so watermarks) answer the last batch's base offset + 1, so end
offsets come from the producer's own delivery reports, never from the broker.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from worker.kafka_clients import poll_ready
from worker.local_broker import LocalBroker, create_topics

# Tansu forms a group in about half of session.timeout.ms; the worker's tests use the same.
FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
# Tansu closes idle connections; librdkafka's notice of each would clutter the output.
QUIET = {"log.connection.close": False}
INPUT_PARTITIONS = 3


@contextmanager
def broker() -> Iterator[tuple[str, int | None]]:
    """(bootstrap, broker pid or None): KAFKA_BOOTSTRAP_SERVERS when set, else a local Tansu."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external, None
        return
    local = LocalBroker().start()
    try:
        yield local.bootstrap, local.process.pid if local.process else None
    finally:
        local.stop()


@dataclass(frozen=True)
class TopicSet:
    input: str
    labels: str
    embeddings: str
    dead_letter: str

    def as_dict(self) -> dict[str, str]:
        return {"input": self.input, "labels": self.labels, "embeddings": self.embeddings, "dead_letter": self.dead_letter}


def fresh_topics(bootstrap: str, name: str) -> TopicSet:
    run = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    topics = TopicSet(f"{run}.in", f"{run}.labels", f"{run}.embeddings", f"{run}.dlq")
    create_topics(
        bootstrap,
        {topics.input: INPUT_PARTITIONS, topics.labels: INPUT_PARTITIONS, topics.embeddings: INPUT_PARTITIONS,
         topics.dead_letter: 1},
    )
    return topics


def event_value(event_id: str, text: str) -> bytes:
    return orjson.dumps({"id": event_id, "text": text})


class InputWriter:
    """Produces input events and remembers, from delivery reports, where each partition ends."""

    def __init__(self, bootstrap: str, topic: str, bulk: bool = False, **config: object) -> None:
        conf: dict[str, object] = {"bootstrap.servers": bootstrap, "linger.ms": 5, "compression.type": "lz4", **QUIET}
        if bulk:
            # Filling a 200k-event backlog quickly: big batches, a deep local queue.
            conf.update({"linger.ms": 100, "batch.size": 1_000_000, "queue.buffering.max.messages": 500_000,
                         "queue.buffering.max.kbytes": 1_048_576})
        conf.update(config)
        self.producer = Producer(conf)
        self.topic = topic
        self.ends: dict[int, int] = {}
        self.errors: list[str] = []
        self.sent = 0

    def _delivered(self, error, message) -> None:  # type: ignore[no-untyped-def]
        if error is not None:
            self.errors.append(str(error))
            return
        partition = message.partition()
        self.ends[partition] = max(self.ends.get(partition, 0), message.offset() + 1)

    def send(self, event_id: str, text: str, key: bytes | None = None) -> None:
        value = event_value(event_id, text)
        while True:
            try:
                self.producer.produce(self.topic, value, key, on_delivery=self._delivered)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.sent += 1
        if self.sent % 1000 == 0:
            self.producer.poll(0)

    def send_all(self, events: Iterable[tuple[str, str]]) -> None:
        for number, (event_id, text) in enumerate(events):
            self.send(event_id, text, key=f"user-{number % 97}".encode())

    def flush(self, timeout_s: float = 120.0) -> None:
        left = self.producer.flush(timeout_s)
        if left or self.errors:
            raise RuntimeError(f"producing the input failed: {left} left, errors {self.errors[:3]}")


def committed(bootstrap: str, group: str, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, **QUIET})
    try:
        result = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in result}
    finally:
        consumer.close()


class CommitWatcher:
    """Polls a group's committed offsets until they reach given ends (one consumer, no group join)."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, **QUIET}
        )
        self.topic = topic

    def reached(self, ends: dict[int, int]) -> bool:
        result = self.consumer.committed([TopicPartition(self.topic, p) for p in ends], timeout=10)
        return all(tp.offset >= ends[tp.partition] for tp in result)

    def wait(self, ends: dict[int, int], timeout_s: float, interval_s: float = 0.05) -> float | None:
        """Wall-clock time (time.time()) when the ends were seen committed, or None on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.reached(ends):
                return time.time()
            time.sleep(interval_s)
        return None

    def close(self) -> None:
        self.consumer.close()


class OutputReader:
    """Reads output topics from the beginning without a group; remembers when each id was seen."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-reader-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                # A reader that waits for data to pile up would add its own delay to the latency.
                "fetch.wait.max.ms": 5,
                "fetch.min.bytes": 1,
                **QUIET,
            }
        )
        assignment = []
        for topic in topics:
            metadata = self.consumer.list_topics(topic, timeout=10)
            assignment += [TopicPartition(topic, p, 0) for p in metadata.topics[topic].partitions]
        self.consumer.assign(assignment)
        self.counts: dict[str, int] = {topic: 0 for topic in topics}

    def read(self, seconds: float, on_record=None) -> int:  # type: ignore[no-untyped-def]
        """Read for `seconds`; `on_record(topic, value, seen_at)` for each record. Returns records read."""
        deadline = time.monotonic() + seconds
        read = 0
        while time.monotonic() < deadline:
            for message in poll_ready(self.consumer, min(0.05, max(0.0, deadline - time.monotonic())), 1000):
                if message.error() is not None:
                    continue
                seen = time.time()
                read += 1
                self.counts[message.topic()] += 1
                if on_record is not None:
                    on_record(message.topic(), message.value(), seen)
        return read

    def read_until(self, expected: dict[str, int], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.counts[topic] >= count for topic, count in expected.items()):
                return True
            self.read(0.2)
        return all(self.counts[topic] >= count for topic, count in expected.items())

    def close(self) -> None:
        self.consumer.close()
