"""Metrics, health probes, logs and traces of a running worker, on the real broker."""

from __future__ import annotations

import threading
import time
import uuid

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.http_support import get, scrape, total
from tests.support.kafka_support import (
    FAST_GROUP,
    WorkerProcess,
    json_event,
    produce,
    read_messages,
    wait_until,
    worker_env,
)
from worker.local_broker import free_port

pytestmark = pytest.mark.integration

# The model takes at least this long to load, so that "not ready" can be seen on any machine and device.
LOADING_S = 2.0


def test_probes_metrics_and_logs_follow_the_events(bootstrap, worker_topics):
    topics = worker_topics
    port = free_port()
    env = worker_env(bootstrap, topics, f"g-{uuid.uuid4().hex[:8]}", http__port=port)
    codes: list[int] = []
    with WorkerProcess(env, slow_load_s=LOADING_S) as worker:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            code, body = get(f"http://127.0.0.1:{port}/readyz")
            if code:
                codes.append(code)
            if code == 200:
                break
            time.sleep(0.1)
        assert 503 in codes and codes[-1] == 200, codes
        assert get(f"http://127.0.0.1:{port}/livez")[0] == 200
        before = scrape(port)
        assert total(before, "encoder_worker_events_consumed_total") == 0

        produce(bootstrap, topics["input"], [(b"k", json_event(f"m{i}", f"text number {i}")) for i in range(50)])
        produce(bootstrap, topics["input"], [(b"k", b"{broken"), (b"k", b'{"text": ""}'), (b"k", b"[1]")])
        read_messages(bootstrap, topics["labels"], 50, timeout_s=90)
        read_messages(bootstrap, topics["dead_letter"], 3, timeout_s=30)

        def delivered() -> bool:
            samples = scrape(port)
            return total(samples, "encoder_worker_events_labelled_total") == 50 and total(
                samples, "encoder_worker_commits_total", result="ok") >= 1
        wait_until(delivered, timeout_s=30, what="labelled counter and a commit")

        def lag_series() -> list[float]:
            return [v for (name, labels), v in scrape(port).items() if name == "encoder_worker_consumer_lag"]
        # librdkafka statistics arrive every 5 s; one lag series per assigned partition.
        wait_until(lambda: len(lag_series()) == 3, timeout_s=20, what="consumer lag for each partition")
        assert all(value >= 0 for value in lag_series())
        after = scrape(port)
        assert worker.stop() == 0
        logs = worker.logs()

    assert total(after, "encoder_worker_events_consumed_total", topic=topics["input"]) == 53
    assert total(after, "encoder_worker_events_dead_lettered_total", reason="invalid_json") == 1
    assert total(after, "encoder_worker_events_dead_lettered_total", reason="empty_text") == 1
    assert total(after, "encoder_worker_events_dead_lettered_total", reason="not_an_object") == 1
    assert total(after, "encoder_worker_batches_total") >= 1
    assert total(after, "encoder_worker_batch_size_sum") == 50
    assert total(after, "encoder_worker_model_duration_seconds_count") == total(after, "encoder_worker_batches_total")
    assert total(after, "encoder_worker_end_to_end_latency_seconds_count") == 53
    assert total(after, "encoder_worker_batch_padding_ratio_count") >= 1
    assert total(after, "encoder_worker_partitions_assigned") == 3
    assert total(after, "encoder_worker_rebalances_total", kind="assign") >= 1
    assert any(name == "encoder_worker_queue_depth" and ("stage", "model") in labels for name, labels in after)

    lines = [orjson.loads(line) for line in logs.splitlines() if line.startswith("{")]
    not_json = [line for line in logs.splitlines() if line.strip() and not line.startswith("{")]
    assert len(lines) >= 5 and not not_json, not_json
    [settings_line] = [line for line in lines if line["message"] == "effective settings"]
    assert settings_line["settings"]["kafka"]["bootstrap_servers"] == bootstrap
    dead = [line for line in lines if line["message"] == "record dead-lettered"]
    assert {line["reason"] for line in dead} == {"invalid_json", "empty_text", "not_an_object"}
    assert all(line["topic"] == topics["input"] and "offset" in line and "partition" in line for line in dead)


def test_traceparent_of_an_input_comes_out_on_its_outputs(bootstrap, worker_topics, tiny_bert_dir):
    from worker.cli import load_encoder
    from worker.runner import Worker
    from worker.settings import WorkerSettings
    from worker.tracing import Tracing

    topics = worker_topics
    settings = WorkerSettings(
        kafka={"bootstrap_servers": bootstrap, "group_id": f"g-{uuid.uuid4().hex[:8]}", "consumer_config": FAST_GROUP},
        topics=topics,
        model={"path": str(tiny_bert_dir), "max_length": 32},
        http={"port": 0},
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    worker = Worker(settings, load_encoder(settings), tracing=Tracing(provider.get_tracer("test")))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    trace_id = uuid.uuid4().hex
    try:
        produce(bootstrap, topics["input"], [(b"a", json_event("traced", "follow me"))],
                headers=[("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01".encode())])
        produce(bootstrap, topics["input"], [(b"b", json_event("untraced", "no header"))])
        labels = read_messages(bootstrap, topics["labels"], 2, timeout_s=90)
        embeddings = read_messages(bootstrap, topics["embeddings"], 2, timeout_s=30)
    finally:
        stop.set()
        thread.join(timeout=60)
    by_id = {orjson.loads(m.value())["id"]: m for m in labels + embeddings}
    for message in labels + embeddings:
        record_id = orjson.loads(message.value())["id"]
        traceparent = dict(message.headers())["traceparent"].decode()
        if record_id == "traced":
            assert traceparent.split("-")[1] == trace_id
    assert dict(by_id["untraced"].headers())["traceparent"].decode().split("-")[1] != trace_id
    wait_until(lambda: any(s.name == "encoder_worker.batch" for s in exporter.get_finished_spans()), 10)
    spans = exporter.get_finished_spans()
    names = {span.name for span in spans}
    assert {"encoder_worker.batch", "encoder_worker.model", "encoder_worker.tokenize", "encoder_worker.produce",
            "encoder_worker.event"} <= names
    [event] = [span for span in spans if span.name == "encoder_worker.event"]
    assert format(event.context.trace_id, "032x") == trace_id
    batch_ids = {span.context.span_id for span in spans if span.name == "encoder_worker.batch"}
    for span in spans:
        if span.name in ("encoder_worker.model", "encoder_worker.tokenize", "encoder_worker.produce"):
            assert span.parent.span_id in batch_ids
    linked = [s for s in spans if s.name == "encoder_worker.batch" and s.links]
    assert any(format(link.context.trace_id, "032x") == trace_id for s in linked for link in s.links)
