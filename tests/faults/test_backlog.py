"""A backlog of 200,000 events queued before the worker starts: all processed, memory bounded by
back-pressure (held windows and librdkafka's bounded prefetch), partitions never paused while the
model keeps taking windows."""

from __future__ import annotations

import random
import time

import orjson
import pytest
from confluent_kafka import Producer

from tests.support.fault_support import RssSampler, TopicReader, messages_logged
from tests.support.kafka_support import committed_at_end, wait_until, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(720)]

EVENTS = 200_000
# Short texts keep the poll loop's decoding and tokenizing cheap, so that the stages after it (model,
# publishing) are the bottleneck and back-pressure, not the poll loop's own pace, is what bounds memory.
TEXT_BYTES = 60
BATCH = 128
# On any machine the model stage must be slower than the poll loop, or nothing is paused: a wait after
# each pass caps it at BATCH / BACKLOG_PASS_S = 2,560 events/s, where the poll loop decodes and
# tokenizes ~13,000/s (2-core EPYC, shared with other work). An idle machine of that kind did the
# whole backlog at ~3,100 events/s without the cap: it costs a fifth more time there, none when shared.
BACKLOG_PASS_S = 0.05
# Processed in 240-273 s on that machine with about half its CPU taken by other work (~65 s idle):
# room for one twice as slow.
PROCESSING_LIMIT_S = 540
GROWTH_LIMIT_MB = 150  # peak over the RSS after warm-up: prefetch, batches, producer queue, allocator
LATE_GROWTH_LIMIT_MB = 40  # growth over the last four fifths of the backlog


def produce_backlog(bootstrap: str, topic: str) -> dict[int, int]:
    """Produce the backlog; returns one past the last offset of each partition."""
    words = "the a billing refund spam great terrible account order ship love hate why how when please".split()
    rng = random.Random(5)
    filler = " ".join(rng.choice(words) for _ in range(TEXT_BYTES // 4))[:TEXT_BYTES]
    ends: dict[int, int] = {}

    def delivered(err, msg) -> None:
        assert err is None, err
        ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "enable.idempotence": True,
                         "compression.type": "lz4", "queue.buffering.max.messages": 500_000})
    for i in range(EVENTS):
        value = orjson.dumps({"id": f"b{i}", "text": f"{i} {filler}"})
        while True:
            try:
                producer.produce(topic, value, f"user-{i % 100}".encode(), on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 20_000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0
    return ends


def test_backlog_of_200k_events_is_processed_in_bounded_memory(bootstrap, worker_topics, tiny_bert_dir, group, spawn):
    topics = worker_topics
    started = time.monotonic()
    ends = produce_backlog(bootstrap, topics["input"])
    produced_s = time.monotonic() - started
    env = worker_env(
        bootstrap, topics, group, model__path=tiny_bert_dir, model__max_length=16, batch__max_size=BATCH,
        log__level="debug",  # the worker logs back-pressure and pauses at debug level
    )
    worker = spawn(env, slow_batch_s=BACKLOG_PASS_S)
    sampler = RssSampler(worker.process.pid)
    sampler.start()
    try:
        wait_until(lambda: "worker started" in messages_logged(worker), timeout_s=120, what="the worker to start")
        started_rss = sampler.now_mb()  # model loaded and warmed up; consuming starts now
        consuming_since = time.monotonic()
        progress: list[tuple[int, float]] = []  # (events with outputs, worker RSS in MB)
        wanted = {f"b{i}" for i in range(EVENTS)}
        with TopicReader(bootstrap, topics["labels"]) as labels:
            while len(labels.distinct_ids()) < EVENTS:
                assert time.monotonic() - consuming_since < PROCESSING_LIMIT_S, (
                    f"{len(labels.distinct_ids())} of {EVENTS} after {PROCESSING_LIMIT_S}s"
                )
                assert worker.running(), worker.logs()[-3000:]
                labels.read(1.0)
                progress.append((len(labels.distinct_ids()), sampler.now_mb()))
            assert labels.distinct_ids() == wanted
        processed_s = time.monotonic() - consuming_since
        wait_until(lambda: committed_at_end(bootstrap, group, topics["input"], 3, ends), timeout_s=60,
                   what="committed offsets to reach the end of the input")
        end_rss = sampler.now_mb()
        assert worker.running(), worker.logs()[-3000:]
        assert worker.stop() == 0, worker.logs()[-3000:]
    finally:
        sampler.stop()

    logged = messages_logged(worker)
    holds = logged.count("model busy: holding windows")
    pauses = logged.count("model busy: partitions paused")
    # Once the pipeline is full (a fifth of the backlog done), memory must stop growing: a worker that
    # held what it consumed ahead of the model would grow by ~1 KB per event still queued (~160 MB here).
    settled_mb = max(rss for done, rss in progress if done <= EVENTS // 5)
    later_peak_mb = max(rss for done, rss in progress if done > EVENTS // 5)
    print(
        f"\nbacklog of {EVENTS} events produced in {produced_s:.0f}s, processed in {processed_s:.0f}s "
        f"({EVENTS / processed_s:.0f} events/s); worker RSS: {started_rss:.0f} MB at start, {settled_mb:.0f} MB "
        f"at a fifth done, {later_peak_mb:.0f} MB peak after that, {sampler.peak_mb:.0f} MB peak overall, "
        f"{end_rss:.0f} MB at the end; back-pressure held windows {holds} times, paused partitions {pauses} times"
    )
    assert holds > 0, "back-pressure never held a window: the model was not the bottleneck"
    # The model took a window every few tenths of a second: no pause, which would have made librdkafka
    # drop what it had prefetched and fetch it again.
    assert pauses == 0
    assert later_peak_mb - settled_mb < LATE_GROWTH_LIMIT_MB
    assert sampler.peak_mb - started_rss < GROWTH_LIMIT_MB
