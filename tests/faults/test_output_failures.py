"""Outputs that cannot be written: a clear error, no commit past them, and never "commit and move on"."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.support.fault_support import (
    TopicReader,
    committed_snapshot,
    messages_logged,
    produce_raw,
)
from tests.support.kafka_support import create_topic, json_event, produce, wait_until, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def run_to_exit(env: dict[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "worker", "run"], env=env, capture_output=True, text=True, timeout=timeout_s
    )


@pytest.mark.parametrize("output", ["labels", "embeddings", "dead_letter"])
def test_missing_output_topic_stops_at_start_naming_it(output, bootstrap, worker_topics, group):
    topics = {**worker_topics, output: f"missing-{uuid.uuid4().hex[:6]}"}
    produce(bootstrap, topics["input"], [(None, json_event(f"m{i}", "hello")) for i in range(5)])
    result = run_to_exit(worker_env(bootstrap, topics, group))
    assert result.returncode == 2, result.stderr[-2000:]
    setting = f"WORKER_TOPICS__{output.upper()}"
    assert f"{setting}={topics[output]!r}" in result.stderr
    # It stopped before consuming: nothing committed, nothing skipped.
    assert all(offset < 0 for offset in committed_snapshot(bootstrap, group, topics["input"]).values())


def test_output_the_producer_refuses_stops_loudly_and_never_moves_on(bootstrap, topic_factory, tiny_bert_dir, group):
    """One event's labels record is over the producer's size limit (here: its 1,000-character id)."""
    topics = {"input": topic_factory("in", 1), "labels": topic_factory("labels", 1),
              "embeddings": topic_factory("emb", 1), "dead_letter": topic_factory("dlq", 1)}
    bad = 30
    events = [json_event(f"o{i}", f"event {i}") if i != bad else json_event("x" * 1000, "event with a huge id")
              for i in range(60)]
    produce(bootstrap, topics["input"], [(b"k", value) for value in events])
    common = dict(model__path=tiny_bert_dir, model__max_length=32, output__embedding_encoding="base64-f16")
    refusing = worker_env(bootstrap, topics, group, kafka__producer_config={"message.max.bytes": 1000}, **common)

    for attempt in (1, 2):  # a restart meets the same record and stops again: it never skips it
        result = run_to_exit(refusing)
        assert result.returncode == 1, result.stderr[-3000:]
        failed = [line for line in result.stderr.splitlines() if '"worker failed' in line]
        assert failed and topics["labels"] in failed[0] and "too large" in failed[0].lower(), result.stderr[-3000:]
        committed = committed_snapshot(bootstrap, group, topics["input"])[0]
        assert committed <= bad, f"attempt {attempt}: committed {committed}, past the undelivered output at {bad}"
        with TopicReader(bootstrap, topics["labels"]) as labels:
            labels.read(2.0)
            delivered = labels.distinct_ids()
        # Whatever is committed has its outputs.
        assert {f"o{i}" for i in range(max(committed, 0))} <= delivered
        assert "x" * 1000 not in delivered

    # With the limit fixed, the same records go through: nothing was lost meanwhile.
    with TopicReader(bootstrap, topics["labels"]) as labels:
        fixed = subprocess.Popen([sys.executable, "-m", "worker", "run"],
                                 env=worker_env(bootstrap, topics, group, **common),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            labels.read_until_ids({f"o{i}" for i in range(60) if i != bad} | {"x" * 1000}, timeout_s=120)
        finally:
            fixed.terminate()
            assert fixed.wait(timeout=60) == 0


def create_with_config(bootstrap: str, topic: str, config: dict[str, str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the result is in
    admin.create_topics([NewTopic(topic, 1, 1, config=config)])[topic].result(timeout=30)


def _broker_enforces_topic_max_message_bytes(bootstrap: str) -> bool:
    topic = f"probe-size-{uuid.uuid4().hex[:8]}"
    create_with_config(bootstrap, topic, {"max.message.bytes": "1000"})
    producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 10000})
    outcome: list = []
    producer.produce(topic, b"x" * 5000, on_delivery=lambda err, msg: outcome.append(err))
    producer.flush(15)
    return bool(outcome and outcome[0] is not None)


def test_output_the_broker_rejects_stops_loudly_without_committing_past_it(
    bootstrap, topic_factory, tiny_bert_dir, group
):
    """The labels topic takes at most 100 kB per record; one input carries a 300 kB header, which outputs copy."""
    if not _broker_enforces_topic_max_message_bytes(bootstrap):
        pytest.skip("the broker accepts records larger than a topic's max.message.bytes (Tansu ignores topic "
                    "configs), so it cannot reject an output; run against Apache Kafka to check this path")
    topics = {"input": topic_factory("in", 1), "embeddings": topic_factory("emb", 1),
              "dead_letter": topic_factory("dlq", 1), "labels": f"labels-{uuid.uuid4().hex[:8]}"}
    create_with_config(bootstrap, topics["labels"], {"max.message.bytes": "100000"})
    bad = 20
    produce_raw(bootstrap, topics["input"], [
        (b"k", json_event(f"b{i}", f"event {i}"), [("blob", b"z" * 300_000)] if i == bad else None) for i in range(40)
    ])
    result = run_to_exit(worker_env(bootstrap, topics, group, model__path=tiny_bert_dir, model__max_length=32))
    assert result.returncode == 1, result.stderr[-3000:]
    assert any('"worker failed' in line and topics["labels"] in line for line in result.stderr.splitlines())
    assert committed_snapshot(bootstrap, group, topics["input"])[0] <= bad


def test_outputs_not_acknowledged_in_time_stop_the_worker_and_a_restart_loses_nothing(
    pausable_broker, tiny_bert_dir, group, spawn
):
    """The broker hangs for longer than the producer's message.timeout.ms: deliveries fail, the worker exits 1."""
    bootstrap = pausable_broker.bootstrap
    topics = {"input": "in", "labels": "labels", "embeddings": "emb", "dead_letter": "dlq"}
    for name in topics.values():
        create_topic(bootstrap, name, 1 if name == "dlq" else 3)
    # The hang must find outputs not yet delivered, whatever the timing: a backlog keeps the (slowed) worker
    # busy, and a long linger.ms holds each output in the producer for a while before it is sent.
    ids = [f"t{i}" for i in range(10_000)]
    produce(bootstrap, topics["input"], [(f"key-{i % 20}".encode(), json_event(event_id, f"event {i}"))
                                         for i, event_id in enumerate(ids)])
    common = dict(model__path=tiny_bert_dir, model__max_length=32, batch__max_size=32, batch__max_wait_ms=20)
    impatient = worker_env(bootstrap, topics, group, kafka__producer_config={"message.timeout.ms": 3000, "linger.ms": 1500}, **common)
    with TopicReader(bootstrap, topics["labels"]) as labels:
        # Slowed passes (at most 32 / 0.05 = 640 events/s) keep it from finishing before the hang on any machine.
        worker = spawn(impatient, slow_batch_s=0.05)
        wait_until(lambda: labels.read() >= 300, timeout_s=120, what="the first outputs")
        pausable_broker.pause()
        time.sleep(12)
        pausable_broker.resume()
        assert worker.wait(timeout_s=120) == 1, worker.logs()[-3000:]
        assert any(m.startswith("worker failed") for m in messages_logged(worker))
        failure = next(line for line in worker.logs().splitlines() if '"worker failed' in line)
        print(f"\n{failure[:400]}")
        committed = committed_snapshot(bootstrap, group, topics["input"])
        labels.read(2.0)
        # No committed offset passes an event whose outputs are missing.
        sources = [orjson.loads(m.value())["source"] for m in labels.messages]
        delivered = {(source["partition"], source["offset"]) for source in sources}
        for partition, offset in committed.items():
            assert all((partition, o) in delivered for o in range(max(offset, 0))), f"partition {partition}"
        assert sum(max(offset, 0) for offset in committed.values()) < len(ids), "the worker finished before the hang"

        patient = spawn(worker_env(bootstrap, topics, group, **common))
        labels.read_until_ids(set(ids), timeout_s=180)
        assert patient.stop() == 0
