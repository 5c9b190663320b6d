"""Fixtures for the fault tests: worker processes that are always stopped, a broker a test may pause."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.kafka_support import WorkerProcess


@pytest.fixture
def group() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def spawn() -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes; whatever is still running at the end of the test is killed.

    `spawn(env, slow_batch_s=0.1)` slows each forward pass by that much (see WorkerProcess).
    """
    started: list[WorkerProcess] = []

    def start(
        env: dict[str, str], slow_batch_s: float | None = None, slow_load_s: float | None = None
    ) -> WorkerProcess:
        worker = WorkerProcess(env, slow_batch_s=slow_batch_s, slow_load_s=slow_load_s)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.__exit__(None, None, None)
        Path(worker.log_file.name).unlink(missing_ok=True)  # failures quote the log's tail already


@pytest.fixture
def pausable_broker():
    """A broker of this test's own, which it may stop and resume (SIGSTOP/SIGCONT)."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("needs a local Tansu broker it can pause; KAFKA_BOOTSTRAP_SERVERS points at an external cluster")
    from worker.local_broker import LocalBroker

    broker = LocalBroker().start()
    try:
        yield broker
    finally:
        broker.stop()
