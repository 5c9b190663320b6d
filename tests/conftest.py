"""Shared fixtures: one real broker per session, fresh topics per test, tiny real models.

Set KAFKA_BOOTSTRAP_SERVERS to run the suite against an existing cluster (Apache Kafka,
Redpanda); otherwise a local Tansu broker is started for the session.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import kafka_support, model_support

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    from worker.local_broker import LocalBroker

    broker = LocalBroker().start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def topic_factory(bootstrap: str) -> Callable[..., str]:
    """Create a uniquely named topic: `topic_factory("events", partitions=3)`."""

    def create(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        kafka_support.create_topic(bootstrap, name, partitions)
        return name

    return create


@pytest.fixture
def worker_topic_set(topic_factory: Callable[..., str]) -> Callable[[int], dict[str, str]]:
    """Make a fresh set of a worker's topics: `worker_topic_set(8)` gives input and outputs 8 partitions."""

    def create(partitions: int) -> dict[str, str]:
        return {
            "input": topic_factory("in", partitions),
            "labels": topic_factory("labels", partitions),
            "embeddings": topic_factory("emb", partitions),
            "dead_letter": topic_factory("dlq", 1),
        }

    return create


@pytest.fixture
def worker_topics(worker_topic_set: Callable[[int], dict[str, str]]) -> dict[str, str]:
    """A fresh set of input/output topics: input has 3 partitions."""
    return worker_topic_set(3)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_support.save_tiny_model(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(scope="session")
def tiny_modernbert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_support.save_tiny_model(tmp_path_factory.mktemp("tiny-modernbert"), "modernbert")
