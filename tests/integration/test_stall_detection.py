"""A partition that stops being fetched for a reason nobody thought of makes `/livez` fail.

The cause is simulated on the poll thread: one partition is paused behind the worker's back (its
pauser does not know), as the stale pause flag of issue 17 did. Real broker, real model, real probe.
"""

from __future__ import annotations

import threading
import uuid

import orjson
import pytest
from confluent_kafka import Producer, TopicPartition

from tests.support.http_support import get
from tests.support.kafka_support import FAST_GROUP, read_messages, wait_until
from worker.pausing import PartitionPauser

pytestmark = pytest.mark.integration

LIVENESS_TIMEOUT_S = 3.0


def probe(port: int) -> tuple[int, dict]:
    status, body = get(f"http://127.0.0.1:{port}/livez")
    return status, orjson.loads(body)


def stalled_gauge(port: int) -> float | None:
    status, body = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith("encoder_worker_partitions_stalled"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_partition_paused_behind_the_workers_back_fails_liveness_and_recovers(
    bootstrap, worker_topics, tiny_bert_dir, monkeypatch
):
    from worker.cli import load_encoder
    from worker.health import WorkerStatus
    from worker.http_server import HealthServer
    from worker.runner import Worker
    from worker.settings import WorkerSettings
    from worker.telemetry import setup_telemetry

    topics = worker_topics
    hidden = TopicPartition(topics["input"], 0)
    sabotage = {"pause": True, "done": False}
    settle = PartitionPauser.settle

    def settle_then_sabotage(pauser: PartitionPauser) -> None:
        settle(pauser)
        if (hidden.topic, hidden.partition) not in pauser.assignment:
            return
        if sabotage["pause"] and not sabotage["done"]:
            pauser.consumer.pause([hidden])  # not through the pauser: it still counts the partition as active
            sabotage["done"] = True
        elif not sabotage["pause"] and sabotage["done"]:
            pauser.consumer.resume([hidden])
            sabotage["done"] = False

    monkeypatch.setattr(PartitionPauser, "settle", settle_then_sabotage)
    settings = WorkerSettings(
        kafka={
            "bootstrap_servers": bootstrap,
            "group_id": f"g-{uuid.uuid4().hex[:8]}",
            "consumer_config": {**FAST_GROUP, "statistics.interval.ms": 500},
        },
        topics=topics,
        model={"path": str(tiny_bert_dir), "max_length": 32},
        telemetry={"liveness_timeout_s": LIVENESS_TIMEOUT_S},
        http={"port": 0},
    )
    telemetry = setup_telemetry(settings.telemetry, "stall-test")
    status = WorkerStatus()
    server = HealthServer("127.0.0.1", 0, status, telemetry.registry, LIVENESS_TIMEOUT_S).start()
    worker = Worker(settings, load_encoder(settings), telemetry.metrics, status=status)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        wait_until(lambda: sabotage["done"], timeout_s=60, what="the worker to be assigned the partition")
        assert probe(server.port)[0] == 200
        producer = Producer({"bootstrap.servers": bootstrap})
        for i in range(20):
            producer.produce(hidden.topic, orjson.dumps({"id": f"h{i}", "text": f"hidden {i}"}), partition=0)
        assert producer.flush(30) == 0

        wait_until(lambda: probe(server.port)[0] == 503, timeout_s=60, what="/livez to fail")
        code, body = probe(server.port)
        assert code == 503 and not body["ok"]
        [reason] = body["reasons"]
        assert f"partition {hidden.topic}:0 stalled" in reason and "records waiting" in reason
        assert stalled_gauge(server.port) == 1

        sabotage["pause"] = False  # the cause goes away: records flow and the probe recovers
        assert len(read_messages(bootstrap, topics["labels"], 20, timeout_s=60)) == 20
        wait_until(lambda: probe(server.port)[0] == 200, timeout_s=30, what="/livez to recover")
        assert stalled_gauge(server.port) == 0
    finally:
        stop.set()
        thread.join(timeout=60)
        server.stop()
        telemetry.shutdown()
