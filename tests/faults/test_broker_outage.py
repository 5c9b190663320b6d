"""The broker stops answering for 20 seconds mid-run (SIGSTOP, then SIGCONT): the worker rides it out."""

from __future__ import annotations

import time

import pytest

from tests.support.fault_support import SteadyProducer, TopicReader, duplicates, log_records, owned_partitions
from tests.support.kafka_support import committed_at_end, create_topic, end_offsets, wait_until, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

EVENTS = 3000
OUTAGE_S = 20


def test_worker_rides_out_a_20s_broker_outage(pausable_broker, tiny_bert_dir, group, spawn):
    bootstrap = pausable_broker.bootstrap
    topics = {"input": "in", "labels": "labels", "embeddings": "emb", "dead_letter": "dlq"}
    for name in topics.values():
        create_topic(bootstrap, name, 1 if name == "dlq" else 3)
    source = SteadyProducer(bootstrap, topics["input"], EVENTS, rate_per_s=100, keys=30)
    env = worker_env(
        bootstrap, topics, group, model__path=tiny_bert_dir, model__max_length=32, batch__max_size=32,
        batch__max_wait_ms=20,
    )
    with TopicReader(bootstrap, topics["labels"]) as labels, TopicReader(bootstrap, topics["embeddings"]) as embeddings:
        worker = spawn(env)
        wait_until(lambda: owned_partitions(worker), timeout_s=120, what="the worker to own partitions")
        source.start()
        wait_until(lambda: labels.read() >= EVENTS // 5, timeout_s=120, what="a fifth of the outputs")

        pausable_broker.pause()
        paused_at = time.monotonic()
        while time.monotonic() - paused_at < OUTAGE_S:
            assert worker.running(), worker.logs()[-3000:]
            time.sleep(1)
        pausable_broker.resume()
        resumed_at = time.monotonic()
        outputs_before = len(labels.messages)  # not read during the outage

        source.join(timeout=180)
        assert source.produced == EVENTS and not source.errors, source.errors[:3]
        wanted = source.ids()
        labels.read_until_ids(wanted, timeout_s=180)
        recovered_s = time.monotonic() - resumed_at
        embeddings.read_until_ids(wanted, timeout_s=60)
        ends = end_offsets(bootstrap, topics["input"], EVENTS)
        wait_until(lambda: committed_at_end(bootstrap, group, topics["input"], 3, ends), timeout_s=60,
                   what="committed offsets to reach the end of the input")
        assert worker.running(), worker.logs()[-3000:]  # the same process throughout: no restart
        assert worker.stop() == 0, worker.logs()[-3000:]
        labels.read_until(0, timeout_s=1, quiet_s=2)

    messages = [record.get("message") for record in log_records(worker)]
    warnings = sorted({r.get("message") for r in log_records(worker) if r.get("level") in ("warning", "error")})
    print(
        f"\noutage of {OUTAGE_S}s after {outputs_before} outputs; "
        f"all {EVENTS} done {recovered_s:.1f}s after resume; "
        f"{duplicates(labels.messages).total} duplicated; partitions lost {messages.count('partitions lost')}x, "
        f"revoked {messages.count('partitions revoked')}x; warnings logged: {warnings}"
    )
    assert labels.distinct_ids() == wanted and embeddings.distinct_ids() == wanted
    assert "worker failed" not in messages
