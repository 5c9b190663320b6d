"""A model slower than `max.poll.interval.ms`: the poll loop keeps polling, so the worker stays in its group."""

from __future__ import annotations

import orjson
import pytest

from tests.support.fault_support import TopicReader, messages_logged, owned_partitions
from tests.support.kafka_support import (
    FAST_GROUP,
    committed_at_end,
    end_offsets,
    json_event,
    produce,
    wait_until,
    worker_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

EVENTS = 64
BATCH = 32  # so at least two passes, one after the other
MAX_POLL_INTERVAL_MS = 3000
# Each pass outlasts max.poll.interval.ms by itself, on any machine and device: a real model's speed
# depends on both (a big random BERT held events 15.7 s on one 2-core machine, 4.4 s on another).
SLOW_BATCH_S = 1.5 * MAX_POLL_INTERVAL_MS / 1000


def test_model_slower_than_max_poll_interval_keeps_the_group(bootstrap, worker_topics, tiny_bert_dir, group, spawn):
    topics = worker_topics
    consumer_config = {
        **FAST_GROUP,
        # librdkafka wants max.poll.interval.ms >= session.timeout.ms.
        "session.timeout.ms": MAX_POLL_INTERVAL_MS,
        "max.poll.interval.ms": MAX_POLL_INTERVAL_MS,
    }
    env = worker_env(
        bootstrap, topics, group, model__path=tiny_bert_dir, model__max_length=32, batch__max_size=BATCH,
        kafka__consumer_config=consumer_config,
    )
    worker = spawn(env, slow_batch_s=SLOW_BATCH_S)
    wait_until(lambda: owned_partitions(worker), timeout_s=120, what="the worker to own partitions")
    produce(bootstrap, topics["input"], [(f"k{i % 4}".encode(), json_event(f"s{i}", f"s {i}")) for i in range(EVENTS)])
    with TopicReader(bootstrap, topics["labels"]) as labels:
        labels.read_until_ids({f"s{i}" for i in range(EVENTS)}, timeout_s=150)
    ends = end_offsets(bootstrap, topics["input"], EVENTS)
    wait_until(lambda: committed_at_end(bootstrap, group, topics["input"], 3, ends), timeout_s=30,
               what="committed offsets to reach the end of the input")
    # Held longer by the model than the poll interval allows, or the test proves nothing.
    latencies_ms = [
        record["produced_at_ms"] - record["source"]["timestamp_ms"]
        for record in (orjson.loads(m.value()) for m in labels.messages)
    ]
    print(f"\nmodel held events up to {max(latencies_ms) / 1000:.1f}s; max.poll.interval.ms={MAX_POLL_INTERVAL_MS}")
    assert max(latencies_ms) > 2 * MAX_POLL_INTERVAL_MS

    messages = messages_logged(worker)
    assert worker.running()
    assert messages.count("partitions assigned") == 1, "the worker rejoined its group"
    assert "partitions lost" not in messages and "partitions revoked" not in messages
    assert "consumer error" not in messages
    # librdkafka says "Application maximum poll interval (…) exceeded" and leaves the group.
    assert "maximum poll interval" not in worker.logs() and "MAXPOLL" not in worker.logs()
    assert worker.stop() == 0, worker.logs()[-3000:]
