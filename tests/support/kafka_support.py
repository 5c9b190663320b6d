"""Helpers for integration tests: topics, producing events, reading outputs, worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.support.slow_worker import SLOW_BATCH_ENV, SLOW_LOAD_ENV
from worker.local_broker import create_topics, read_topic

REPO = Path(__file__).resolve().parents[2]

# Tansu takes about half of session.timeout.ms to form a group; keep it short in tests.
FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    create_topics(bootstrap, {name: partitions})


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]], headers=None) -> int:
    """Produce (key, value) pairs; returns how many. Waits until all are acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    errors: list[str] = []
    count = 0
    for key, value in records:
        while True:
            try:
                producer.produce(
                    topic, value, key, headers=headers,
                    on_delivery=lambda err, msg: errors.append(str(err)) if err else None,
                )
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
        if count % 10000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    assert remaining == 0 and not errors, f"produce failed: {remaining} left, errors {errors[:3]}"
    return count


def json_event(event_id: str | None, text: str, **extra: object) -> bytes:
    event: dict[str, object] = {"text": text, **extra}
    if event_id is not None:
        event["id"] = event_id
    return orjson.dumps(event)


def read_json(bootstrap: str, topic: str, expected: int, timeout_s: float = 120.0) -> list[dict]:
    return [orjson.loads(message.value()) for message in read_topic(bootstrap, topic, expected, timeout_s)]


def read_messages(bootstrap: str, topic: str, expected: int, timeout_s: float = 120.0) -> list:
    return read_topic(bootstrap, topic, expected, timeout_s)


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        result = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in result}
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str, records: int) -> dict[int, int]:
    """One past the last offset of each partition, found by reading its `records` records.

    Tansu's ListOffsets answers the last batch's base offset + 1, so watermarks cannot be trusted.
    """
    ends: dict[int, int] = {}
    for message in read_topic(bootstrap, topic, records, timeout_s=60):
        ends[message.partition()] = max(ends.get(message.partition(), 0), message.offset() + 1)
    return ends


def committed_at_end(bootstrap: str, group: str, topic: str, partitions: int, ends: dict[int, int]) -> bool:
    committed = committed_offsets(bootstrap, group, topic, partitions)
    return all(committed.get(p) == end for p, end in ends.items())


def wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.25, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what or condition}")


def worker_env(bootstrap: str, topics: dict[str, str], group: str, **settings: object) -> dict[str, str]:
    """Environment for `encoder-worker run`: WORKER_* variables from keyword arguments.

    `model__path="/x"` becomes WORKER_MODEL__PATH=/x; dicts are passed as JSON.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("WORKER_")}
    env.update(
        {
            "WORKER_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "WORKER_KAFKA__GROUP_ID": group,
            "WORKER_KAFKA__CONSUMER_CONFIG": orjson.dumps(FAST_GROUP).decode(),
            "WORKER_TOPICS__INPUT": topics["input"],
            "WORKER_TOPICS__LABELS": topics.get("labels", ""),
            "WORKER_TOPICS__EMBEDDINGS": topics.get("embeddings", ""),
            "WORKER_TOPICS__DEAD_LETTER": topics["dead_letter"],
            "WORKER_HTTP__PORT": "0",
            "WORKER_LOG__FORMAT": "json",
            "HF_HUB_OFFLINE": "1",
        }
    )
    for key, value in settings.items():
        name = "WORKER_" + key.upper()
        env[name] = orjson.dumps(value).decode() if isinstance(value, (dict, list)) else str(value)
    return env


class WorkerProcess:
    """`python -m worker run` in a subprocess, its logs in a file.

    `slow_batch_s` (a wait after each forward pass) and `slow_load_s` (a wait before the model
    loads) run it through tests.support.slow_worker instead: the same worker with a model slower
    than something on any machine, for tests whose point needs that.
    """

    def __init__(
        self,
        env: dict[str, str],
        args: list[str] | None = None,
        slow_batch_s: float | None = None,
        slow_load_s: float | None = None,
    ) -> None:
        self.log_file = tempfile.NamedTemporaryFile(prefix="worker-", suffix=".log", delete=False)
        module = "worker"
        if slow_batch_s is not None or slow_load_s is not None:
            module = "tests.support.slow_worker"
            env = {**env, SLOW_BATCH_ENV: str(slow_batch_s or 0), SLOW_LOAD_ENV: str(slow_load_s or 0)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, "run", *(args or [])],
            env=env,
            cwd=REPO,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )

    def logs(self) -> str:
        return Path(self.log_file.name).read_text(errors="replace")

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"worker did not stop within {timeout_s}s:\n{self.logs()[-3000:]}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def wait(self, timeout_s: float) -> int:
        return self.process.wait(timeout=timeout_s)

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        self.log_file.close()
        Path(self.log_file.name).unlink(missing_ok=True)
