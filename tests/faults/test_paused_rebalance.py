"""Partitions lost while paused by back-pressure, and given back: they must be fetched again.

librdkafka keeps a partition's pause flag across unassignment. A worker frozen past
`session.timeout.ms` while back-pressure has its partitions paused loses them; it drains what it
holds, resumes, rejoins, and gets some of the same partitions back. A worker that resumed "its
current assignment" (empty at that moment) then fetched nothing from them, forever, while its
probes said healthy. One worker is frozen with SIGSTOP, alone or beside another; every event must
get its outputs.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.fault_support import TopicReader, log_records, owned_partitions
from tests.support.kafka_support import FAST_GROUP, json_event, produce, wait_until, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

PARTITIONS = 8
FIRST_ROUND = 6000
SECOND_ROUND = 2000
SESSION_TIMEOUT_S = FAST_GROUP["session.timeout.ms"] / 1000
# Each forward pass waits this long, so the model is slower than the poll loop on any machine and
# back-pressure keeps the partitions paused; a pass also outlasts the poll loop's wait for room in
# the model's queue (0.1 s), so the loss is seen while windows are still held, as in production.
# What a worker holds (a poll of at most 500 records, windows of 64) drains in a second or two.
SLOW_BATCH_S = 0.15
WINDOW = 64
FREEZE_ATTEMPTS = 3


@pytest.fixture
def topics8(worker_topic_set):
    return worker_topic_set(PARTITIONS)


def events(prefix: str, count: int) -> list[tuple[bytes, bytes]]:
    return [(f"key-{i % 64}".encode(), json_event(f"{prefix}{i}", f"event {i} of {prefix}")) for i in range(count)]


def paused_with_partitions(worker) -> bool:
    """The worker owns partitions and back-pressure has paused them since it was given them."""
    assigned_at = paused_at = -1
    for i, record in enumerate(log_records(worker)):
        if record.get("message") == "partitions assigned" and record.get("partitions"):
            assigned_at = i
        elif record.get("message") == "model busy: partitions paused":
            paused_at = i
    return bool(owned_partitions(worker)) and paused_at > assigned_at >= 0


def after_the_loss(worker, since: int) -> tuple[bool, set[str]]:
    """From log records after `since`: whether the worker lost partitions and was assigned some again,
    and which of those it had paused when it lost them."""
    lost = lost_paused = regained = set()
    reassigned = False
    for record in log_records(worker)[since:]:
        if record.get("message") == "partitions lost":
            lost = lost | set(record["partitions"])
            if record.get("paused", 0) > 0:
                lost_paused = lost_paused | set(record["partitions"])
        elif record.get("message") == "partitions assigned" and lost and record.get("partitions"):
            reassigned = True
            regained = regained | (set(record["partitions"]) & lost_paused)
    return reassigned, regained


@pytest.mark.parametrize("steady_workers", [0, 1], ids=["alone", "beside-another"])
def test_partitions_lost_while_paused_flow_again_when_regained(
    steady_workers, bootstrap, topics8, tiny_bert_dir, group, spawn
):
    """Alone, the frozen worker rejoins within seconds and gets all its partitions back (the case
    that stalled every time); beside another worker, the group moves its partitions and gives some
    back after a second rebalance."""
    topics = topics8

    def env(name: str) -> dict[str, str]:
        return worker_env(
            bootstrap, topics, group, delivery__instance_id=name, model__path=tiny_bert_dir, model__max_length=32,
            batch__max_size=WINDOW, batch__sort_window=WINDOW, log__level="debug",
            batch__pause_after_ms=0,  # pause as soon as the model's queue is full: the path under test
        )

    frozen = spawn(env("frozen"), slow_batch_s=SLOW_BATCH_S)
    steady = [spawn(env(f"steady-{n}"), slow_batch_s=SLOW_BATCH_S) for n in range(steady_workers)]
    wait_until(lambda: all(owned_partitions(w) for w in [frozen, *steady]), timeout_s=120,
               what="every worker to own partitions")
    with TopicReader(bootstrap, topics["labels"]) as labels:
        produce(bootstrap, topics["input"], events("a", FIRST_ROUND))
        regained: set[str] = set()
        for _attempt in range(FREEZE_ATTEMPTS):
            wait_until(lambda: paused_with_partitions(frozen), timeout_s=60,
                       what="back-pressure to pause the partitions the worker owns")
            since = len(log_records(frozen))
            os.kill(frozen.process.pid, signal.SIGSTOP)
            time.sleep(2 * SESSION_TIMEOUT_S)
            os.kill(frozen.process.pid, signal.SIGCONT)
            wait_until(lambda: after_the_loss(frozen, since)[0], timeout_s=90,
                       what="the frozen worker to lose its partitions and rejoin")
            regained = after_the_loss(frozen, since)[1]
            if regained:
                break
        # The fault this test is about happened, or it proves nothing.
        assert regained, "the frozen worker never lost paused partitions and got them back"
        print(f"\nregained while paused before the loss: {sorted(regained)}; owns {sorted(owned_partitions(frozen))}")

        # New records on every partition, the regained ones included: all must come out.
        produce(bootstrap, topics["input"], events("b", SECOND_ROUND))
        wanted = {f"a{i}" for i in range(FIRST_ROUND)} | {f"b{i}" for i in range(SECOND_ROUND)}
        labels.read_until_ids(wanted, timeout_s=180)
    assert owned_partitions(frozen), "the frozen worker was left without partitions"
    for worker in [frozen, *steady]:
        assert worker.running() and worker.stop() == 0, worker.logs()[-3000:]
