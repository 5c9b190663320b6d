"""Partitions lost while paused by back-pressure, and given back: they must be fetched again.

librdkafka keeps a partition's pause flag across unassignment. A worker frozen past
`session.timeout.ms` while back-pressure has its partitions paused loses them; it drains what it
holds, resumes, rejoins, and gets some of the same partitions back. A worker that resumed "its
current assignment" (empty at that moment) then fetched nothing from them, forever, while its
probes said healthy. Two workers here, one frozen with SIGSTOP; every event must get its outputs.
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
# back-pressure keeps the partitions paused; what a worker holds still drains in about a second.
SLOW_BATCH_S = 0.03
FREEZE_ATTEMPTS = 3


@pytest.fixture
def topics8(topic_factory):
    return {
        "input": topic_factory("in", PARTITIONS),
        "labels": topic_factory("labels", PARTITIONS),
        "embeddings": topic_factory("emb", PARTITIONS),
        "dead_letter": topic_factory("dlq", 1),
    }


def events(prefix: str, count: int) -> list[tuple[bytes, bytes]]:
    return [(f"key-{i % 64}".encode(), json_event(f"{prefix}{i}", f"event {i} of {prefix}")) for i in range(count)]


def lost_while_paused_then_regained(worker, since: int) -> set[str]:
    """Partitions the worker lost while it had them paused, in log records after `since`, and was then given back."""
    lost_paused: set[str] = set()
    regained: set[str] = set()
    for record in log_records(worker)[since:]:
        if record.get("message") == "partitions lost" and record.get("paused", 0) > 0:
            lost_paused |= set(record["partitions"])
        elif record.get("message") == "partitions assigned" and lost_paused:
            regained |= set(record["partitions"]) & lost_paused
    return regained


def test_partitions_lost_while_paused_flow_again_when_regained(bootstrap, topics8, tiny_bert_dir, group, spawn):
    topics = topics8

    def env(name: str) -> dict[str, str]:
        return worker_env(
            bootstrap, topics, group, delivery__instance_id=name, model__path=tiny_bert_dir, model__max_length=32,
            batch__max_size=16, batch__sort_window=16, log__level="debug",
        )

    frozen = spawn(env("frozen"), slow_batch_s=SLOW_BATCH_S)
    steady = spawn(env("steady"), slow_batch_s=SLOW_BATCH_S)
    wait_until(lambda: owned_partitions(frozen) and owned_partitions(steady), timeout_s=120,
               what="both workers to own partitions")
    with TopicReader(bootstrap, topics["labels"]) as labels:
        produce(bootstrap, topics["input"], events("a", FIRST_ROUND))
        regained: set[str] = set()
        for _attempt in range(FREEZE_ATTEMPTS):
            wait_until(lambda: "model busy: partitions paused" in frozen.logs(), timeout_s=60,
                       what="back-pressure to pause the worker's partitions")
            since = len(log_records(frozen))
            os.kill(frozen.process.pid, signal.SIGSTOP)
            time.sleep(2 * SESSION_TIMEOUT_S)
            os.kill(frozen.process.pid, signal.SIGCONT)
            wait_until(lambda: owned_partitions(frozen), timeout_s=90, what="the frozen worker to rejoin")
            regained = lost_while_paused_then_regained(frozen, since)
            if regained:
                break
        # The fault this test is about happened, or it proves nothing.
        assert regained, "the frozen worker never lost paused partitions and got them back"
        print(f"\nregained while paused before the loss: {sorted(regained)}; owns {sorted(owned_partitions(frozen))}")

        # New records on every partition, the regained ones included: all must come out.
        produce(bootstrap, topics["input"], events("b", SECOND_ROUND))
        wanted = {f"a{i}" for i in range(FIRST_ROUND)} | {f"b{i}" for i in range(SECOND_ROUND)}
        labels.read_until_ids(wanted, timeout_s=180)
    assert frozen.running() and steady.running()
    assert owned_partitions(frozen), "the frozen worker was left without partitions"
    assert frozen.stop() == 0, frozen.logs()[-3000:]
    assert steady.stop() == 0, steady.logs()[-3000:]
