"""`encoder-worker demo`: the whole path on a laptop, with nothing to set up.

Starts a local broker (or uses KAFKA_BOOTSTRAP_SERVERS), creates topics, sends sample events
(and a few malformed ones), runs the worker on the packaged model until every event has an
outcome, prints what it classified, and stops everything.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from importlib import resources

import orjson
from confluent_kafka import Producer

from worker.local_broker import LocalBroker, create_topics, read_topic
from worker.logs import configure_logging
from worker.settings import WorkerSettings

MALFORMED: list[tuple[bytes, str]] = [
    (b'{"id": "bad-json", "text": "unterminated', "invalid JSON"),
    (b'{"id": "no-text", "body": "the field is called text"}', "missing text"),
    (b'{"id": "blank", "text": "   "}', "whitespace-only text"),
    (b"\xff\xfe binary \x00 junk", "not UTF-8"),
]


def sample_texts() -> list[str]:
    return (resources.files("worker") / "data" / "demo-events.txt").read_text().splitlines()


def run_demo(extra_events: int = 0) -> int:
    configure_logging("text", os.environ.get("WORKER_LOG__LEVEL", "WARNING"))
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None if external else LocalBroker().start()
    bootstrap = external or broker.bootstrap  # type: ignore[union-attr]
    try:
        return _demo(bootstrap, extra_events)
    finally:
        if broker is not None:
            broker.stop()


def _demo(bootstrap: str, extra_events: int) -> int:
    from worker.cli import load_encoder
    from worker.runner import Worker

    run = uuid.uuid4().hex[:8]
    topics = {
        "input": f"demo-{run}.events",
        "labels": f"demo-{run}.labels",
        "embeddings": f"demo-{run}.embeddings",
        "dead_letter": f"demo-{run}.dead-letter",
    }
    create_topics(bootstrap, {topics["input"]: 3, topics["labels"]: 3, topics["embeddings"]: 3, topics["dead_letter"]: 1})
    print(f"broker {bootstrap}; input topic {topics['input']}")

    texts = sample_texts()
    texts += [texts[i % len(texts)] + f" (copy {i})" for i in range(extra_events)]
    producer = Producer({"bootstrap.servers": bootstrap})
    for number, text in enumerate(texts, start=1):
        event = {"id": f"demo-{number}", "text": text} if number % 10 else {"text": text}  # some without an id
        producer.produce(topics["input"], orjson.dumps(event), key=f"user-{number % 7}".encode())
    for value, _ in MALFORMED:
        producer.produce(topics["input"], value, key=b"user-bad")
    producer.flush(30)
    print(f"sent {len(texts)} events and {len(MALFORMED)} malformed records")

    settings = WorkerSettings(
        kafka={
            "bootstrap_servers": bootstrap,
            "group_id": f"demo-{run}",
            "consumer_config": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
        },
        topics=topics,
        http={"port": 0},
        batch={"max_wait_ms": 20},
    )
    started = time.monotonic()
    encoder = load_encoder(settings)
    print(f"model {encoder.name} on {encoder.device} ready in {time.monotonic() - started:.1f}s; labels: {', '.join(encoder.labels)}")

    stop = threading.Event()
    worker = Worker(settings, encoder)
    exit_codes: list[int] = []
    thread = threading.Thread(target=lambda: exit_codes.append(worker.run(stop)), name="worker")
    thread.start()
    try:
        labels = read_topic(bootstrap, topics["labels"], len(texts), timeout_s=120)
        embeddings = read_topic(bootstrap, topics["embeddings"], len(texts), timeout_s=30)
        dead = read_topic(bootstrap, topics["dead_letter"], len(MALFORMED), timeout_s=30)
    finally:
        stop.set()
        thread.join(timeout=90)
    _print_report(labels, embeddings, dead)
    complete = len(labels) == len(texts) and len(embeddings) == len(texts) and len(dead) == len(MALFORMED)
    if not complete:
        print(f"INCOMPLETE: {len(labels)}/{len(texts)} labelled, {len(dead)}/{len(MALFORMED)} dead-lettered")
    return 0 if complete and exit_codes == [0] else 1


def _print_report(labels: list, embeddings: list, dead: list) -> None:
    dims = {orjson.loads(m.value())["id"]: orjson.loads(m.value())["dim"] for m in embeddings}
    texts = sample_texts()
    rows = sorted((orjson.loads(m.value()) for m in labels), key=lambda r: (r["source"]["partition"], r["source"]["offset"]))
    print()
    print(f"{'id':<24} {'text':<52} {'label':<17} {'score':>5}  {'runner-up':<17} dim")
    print("-" * 124)
    for record in rows:
        text = _text_of(record, texts)
        runner_up = record["labels"][1]["label"] if len(record["labels"]) > 1 else ""
        print(
            f"{record['id'][:24]:<24} {text[:50]:<52} {record['label']:<17} {record['score']:>5.2f}  "
            f"{runner_up:<17} {dims.get(record['id'], '-')}"
        )
    print()
    print(f"dead-letter topic: {len(dead)} record(s)")
    for message in dead:
        headers = dict(message.headers() or [])
        print(
            f"  offset {headers['dlq.source.partition'].decode()}:{headers['dlq.source.offset'].decode()}  "
            f"{headers['dlq.error.type'].decode():<16} {headers['dlq.error.message'].decode()[:70]}"
        )


def _text_of(record: dict, texts: list[str]) -> str:
    event_id = record["id"]
    if event_id.startswith("demo-") and event_id[5:].isdigit():
        number = int(event_id[5:])
        return texts[(number - 1) % len(texts)] if number <= len(texts) else ""
    return "(no id in the event: id is topic:partition:offset)"
