"""Helpers for the fault tests: reading whole topics, following progress, checking order, logs, memory."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.support.kafka_support import WorkerProcess, committed_offsets


def partitions_of(bootstrap: str, topic: str) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "fault-meta"})
    try:
        return sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    finally:
        consumer.close()


class TopicReader:
    """Reads a topic from the beginning without a group, keeping every record; `read()` takes what arrived.

    Cheap enough to call in a wait loop to follow a worker's progress.
    """

    def __init__(self, bootstrap: str, topic: str, isolation: str = "read_uncommitted") -> None:
        self.topic = topic
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "fault-reader",
                "enable.auto.commit": False,
                "isolation.level": isolation,
                "fetch.wait.max.ms": 50,
            }
        )
        self.consumer.assign([TopicPartition(topic, p, 0) for p in partitions_of(bootstrap, topic)])
        self.messages: list = []
        self._ids: set[str] = set()
        self._parsed = 0

    def read(self, timeout_s: float = 0.2) -> int:
        deadline = time.monotonic() + timeout_s
        while True:
            batch = self.consumer.consume(5000, max(0.0, min(0.2, deadline - time.monotonic())))
            self.messages += [m for m in batch if m.error() is None]
            if not batch or time.monotonic() >= deadline:
                return len(self.messages)

    def read_until(self, count: int, timeout_s: float, quiet_s: float = 0.0) -> list:
        """Until `count` records arrived (AssertionError after `timeout_s`), then until `quiet_s` pass without one."""
        deadline = time.monotonic() + timeout_s
        while self.read() < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.topic}: {len(self.messages)} of {count} records after {timeout_s}s")
        quiet_until = time.monotonic() + quiet_s
        while time.monotonic() < quiet_until:
            before = len(self.messages)
            self.read(0.5)
            if len(self.messages) > before:
                quiet_until = time.monotonic() + quiet_s
        return self.messages

    def distinct_ids(self) -> set[str]:
        """Ids of the (JSON) records read so far; parses only what is new since the last call."""
        for message in self.messages[self._parsed :]:
            self._ids.add(orjson.loads(message.value())["id"])
        self._parsed = len(self.messages)
        return self._ids

    def read_until_ids(self, wanted: set[str], timeout_s: float) -> list:
        """Until every id in `wanted` has a record (AssertionError after `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.read()
            missing = len(wanted - self.distinct_ids())
            if not missing:
                return self.messages
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.topic}: {missing} of {len(wanted)} ids have no record after {timeout_s}s")

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ids_of(messages: Iterable) -> list[str]:
    return [orjson.loads(m.value())["id"] for m in messages]


@dataclass
class Duplicates:
    total: int = 0
    ids: list[str] = field(default_factory=list)


def duplicates(messages: list) -> Duplicates:
    seen: set[str] = set()
    found = Duplicates()
    for event_id in ids_of(messages):
        if event_id in seen:
            found.total += 1
            found.ids.append(event_id)
        seen.add(event_id)
    return found


def order_violations(messages: list, sequence_of_id) -> dict[bytes, str]:
    """Keys whose outputs break input order, with what went wrong.

    Outputs of one key live in one output partition; read in offset order, the first occurrence of each
    event must come in input order (`sequence_of_id` gives an id's position among its key's events).
    A redelivery after a crash repeats events already seen, which is allowed: only new ids must keep order.
    """
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for message in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        by_key[message.key()].append(sequence_of_id(orjson.loads(message.value())["id"]))
    problems: dict[bytes, str] = {}
    for key, sequence in by_key.items():
        seen: set[int] = set()
        last_new = -1
        for position in sequence:
            if position in seen:
                continue
            if position < last_new:
                problems[key] = f"event #{position} first appears after #{last_new}"
                break
            seen.add(position)
            last_new = position
    return problems


def log_records(worker: WorkerProcess) -> list[dict]:
    """The worker's JSON log lines (librdkafka's own stderr lines are skipped)."""
    records = []
    for line in worker.logs().splitlines():
        if line.startswith("{"):
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                pass
    return records


def messages_logged(worker: WorkerProcess) -> list[str]:
    return [record.get("message", "") for record in log_records(worker)]


def committed_snapshot(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """Committed offset per partition (negative when nothing was committed)."""
    return committed_offsets(bootstrap, group, topic, len(partitions_of(bootstrap, topic)))


def produce_raw(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None, list[tuple[str, bytes]] | None]],
    **config: object,
) -> int:
    """Produce (key, value, headers) in order, one in flight at a time per call to keep their order exact."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5, **config})
    errors: list[str] = []
    count = 0
    for key, value, headers in records:
        producer.produce(
            topic, value, key, headers=headers, on_delivery=lambda err, msg: errors.append(str(err)) if err else None
        )
        count += 1
        producer.poll(0)
    assert producer.flush(60) == 0 and not errors, f"produce failed: {errors[:3]}"
    return count


class RssSampler(threading.Thread):
    """Samples a process's resident memory every `interval_s`; `peak_mb` and `samples` once stopped."""

    def __init__(self, pid: int, interval_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process(pid)
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self._stop_event.is_set():
            try:
                rss = self.process.memory_info().rss / 2**20
            except Exception:  # noqa: BLE001 - the process ended
                return
            self.samples.append((time.monotonic() - started, rss))
            self._stop_event.wait(self.interval_s)

    def now_mb(self) -> float:
        return self.process.memory_info().rss / 2**20

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    @property
    def peak_mb(self) -> float:
        return max(rss for _, rss in self.samples)


class SteadyProducer(threading.Thread):
    """Produces `count` JSON events at about `rate_per_s` in the background, so that faults land mid-stream.

    Event i has id `{prefix}{i}` and key `key-{i % keys}`: per key, input order is increasing i.
    """

    def __init__(self, bootstrap: str, topic: str, count: int, rate_per_s: float, keys: int, prefix: str = "e") -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.count = bootstrap, topic, count
        self.rate, self.keys, self.prefix = rate_per_s, keys, prefix
        self.produced = 0
        self.errors: list[str] = []

    def ids(self) -> set[str]:
        return {f"{self.prefix}{i}" for i in range(self.count)}

    def run(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 10})
        started = time.monotonic()
        for i in range(self.count):
            delay = started + i / self.rate - time.monotonic()
            if delay > 0:
                producer.poll(delay)
            value = orjson.dumps({"id": f"{self.prefix}{i}", "text": f"event {i} for key {i % self.keys}"})
            producer.produce(
                self.topic, value, f"key-{i % self.keys}".encode(),
                on_delivery=lambda err, msg: self.errors.append(str(err)) if err else None,
            )
            self.produced += 1
        producer.flush(60)


def lost_partitions(workers: Iterable[WorkerProcess], topic: str) -> set[int]:
    """Partitions of `topic` that any of these workers logged as lost (the broker took them away)."""
    lost: set[int] = set()
    for worker in workers:
        for record in log_records(worker):
            if record.get("message") == "partitions lost":
                lost |= {int(name.rsplit(":", 1)[1]) for name in record.get("partitions", []) if name.rsplit(":", 1)[0] == topic}
    return lost


def repeated_offsets(messages: list) -> dict[int, list[int]]:
    """Input offsets, per input partition, of the events whose output appears more than once."""
    repeated_ids = set(duplicates(messages).ids)
    repeated: dict[int, set[int]] = {}
    for message in messages:
        record = orjson.loads(message.value())
        if record["id"] in repeated_ids:
            repeated.setdefault(record["source"]["partition"], set()).add(record["source"]["offset"])
    return {partition: sorted(offsets) for partition, offsets in repeated.items()}


def owned_partitions(worker: WorkerProcess) -> set[str]:
    """The partitions a worker owns now, replayed from its "partitions assigned/revoked/lost" log lines."""
    owned: set[str] = set()
    for record in log_records(worker):
        message = record.get("message")
        if message == "partitions assigned":
            owned |= set(record.get("partitions", []))
        elif message in ("partitions revoked", "partitions lost"):
            owned -= set(record.get("partitions", []))
    return owned
