"""A running worker (packaged MiniLM, real broker) takes a replaced labels file without a restart,
and keeps its labels and its readiness when a replacement is broken."""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.http_support import get
from tests.support.kafka_support import WorkerProcess, json_event, produce, read_messages, wait_until, worker_env
from worker.labels import parse_labels_file
from worker.local_broker import free_port
from worker.records import LabelsRecord

pytestmark = pytest.mark.integration

V1 = """
labels:
  - name: spam
    description: Unsolicited advertising, scams and links pushing people to buy or click.
    examples: ["Buy cheap followers now!!! Click the link in my bio", "Crypto giveaway, send 1 BTC get 2 back"]
  - name: billing question
    description: A customer asking about a charge, an invoice, a refund or a payment.
    examples: ["Why was I charged twice this month?", "How do I get a refund for my last order?"]
  - name: praise
    description: Compliments and thanks about a product or a service.
    examples: ["Thank you so much, your support team was amazing!"]
"""
# A new label, and a threshold no spam text reaches: spam texts now get the fallback.
V2 = V1.replace(
    "    examples: [\"Buy cheap", "    threshold: 0.99\n    examples: [\"Buy cheap"
) + """  - name: shipping
    description: A customer asking where a parcel is, or saying a delivery is late or lost.
    examples: ["Where is my parcel? It still has not arrived", "My package tracking has not moved in a week"]
fallback: unsure
"""
BROKEN = V2 + "colour: blue\n"  # an unknown field

SHIPPING_TEXTS = ["My parcel never arrived, where is it?", "The delivery of my package is a week late"]
SPAM_TEXTS = ["Buy followers now, click the link in my bio!!!"]
TEXTS = SHIPPING_TEXTS + SPAM_TEXTS + ["I was charged twice for one order", "Thanks, your team was wonderful"]


class ConfigMapVolume:
    """A directory laid out as the kubelet mounts a ConfigMap: labels.yaml -> ..data/labels.yaml,
    ..data -> a directory per version; an update repoints ..data in one rename."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "labels.yaml"
        self.versions = 0

    def publish(self, content: str) -> None:
        self.versions += 1
        target = self.root / f"..v{self.versions}"
        target.mkdir(parents=True)
        (target / "labels.yaml").write_text(content)
        staged = self.root / "..data_tmp"
        staged.symlink_to(target.name)
        os.replace(staged, self.root / "..data")
        if not self.path.is_symlink():
            self.path.symlink_to("..data/labels.yaml")


def series(port: int, name: str, label: str) -> dict[str, float]:
    """One metric's samples from /metrics, by the value of one of their labels."""
    status, body = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return {
        sample.labels[label]: sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == name
    }


def reload_results(port: int) -> dict[str, float]:
    return series(port, "encoder_worker_labels_reloads_total", "result")


def active_labels(port: int) -> dict[str, float]:
    return series(port, "encoder_worker_labels_active", "labels_version")


def log_lines(worker: WorkerProcess) -> list[dict]:
    return [orjson.loads(line) for line in worker.logs().splitlines() if line.startswith("{")]


def send(bootstrap: str, topic: str, batch: str) -> list[str]:
    ids = [f"{batch}{n}" for n in range(len(TEXTS))]
    produce(bootstrap, topic, [(f"key-{n}".encode(), json_event(i, text)) for n, (i, text) in enumerate(zip(ids, TEXTS))])
    return ids


def test_a_running_worker_takes_a_replaced_labels_file_and_keeps_its_labels_when_one_is_broken(
    bootstrap, worker_topics, tmp_path
):
    topics = worker_topics
    volume = ConfigMapVolume(tmp_path / "labels")
    volume.publish(V1)
    v1, v2 = parse_labels_file(V1.encode(), "v1").version, parse_labels_file(V2.encode(), "v2").version
    port = free_port()
    # The default check interval: a change must be noticed within 15 s without tuning.
    env = worker_env(
        bootstrap, topics, f"g-{uuid.uuid4().hex[:8]}", model__labels_file=str(volume.path), http__port=port
    )
    with WorkerProcess(env) as worker:
        wait_until(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, timeout_s=180, what="ready")
        assert active_labels(port) == {v1: 3}
        first = send(bootstrap, topics["input"], "a")
        read_messages(bootstrap, topics["labels"], len(first), timeout_s=120)

        volume.publish(V2)
        during = send(bootstrap, topics["input"], "b")  # scored with either set, each window with one
        wait_until(
            lambda: any(line["message"] == "labels reloaded" for line in log_lines(worker)),
            timeout_s=60,
            what="the worker to reload its labels",
        )
        (reloaded,) = [line for line in log_lines(worker) if line["message"] == "labels reloaded"]
        assert reloaded["labels_version"] == v2 and reloaded["previous_version"] == v1
        after = send(bootstrap, topics["input"], "c")
        read_messages(bootstrap, topics["labels"], 3 * len(TEXTS), timeout_s=120)

        volume.publish(BROKEN)
        wait_until(lambda: reload_results(port).get("failed") == 1, timeout_s=60, what="the broken file counted")
        (error,) = [line for line in log_lines(worker) if line["message"].startswith("labels file")]
        assert error["level"] == "error" and error["file"] == str(volume.path)
        assert "unknown field(s) colour" in error["error"] and error["labels_version"] == v2
        assert get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        assert reload_results(port) == {"ok": 1, "failed": 1}
        assert active_labels(port) == {v2: 4}
        last = send(bootstrap, topics["input"], "d")
        expected = first + during + after + last
        labels = read_messages(bootstrap, topics["labels"], len(expected), timeout_s=120)
        embeddings = read_messages(bootstrap, topics["embeddings"], len(expected), timeout_s=120)
        assert get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        assert worker.stop() == 0

    # Every event has exactly its outputs: nothing lost, nothing twice (the worker has stopped and
    # flushed, so a longer read finds no more).
    assert len(read_messages(bootstrap, topics["labels"], len(expected) + 1, timeout_s=5)) == len(expected)
    records = {r["id"]: r for r in (orjson.loads(m.value()) for m in labels)}
    assert sorted(records) == sorted(expected) and len(labels) == len(expected)
    assert sorted(orjson.loads(m.value())["id"] for m in embeddings) == sorted(expected)

    for record in records.values():
        LabelsRecord.model_validate(record)
    text_of = dict(zip(first + during + after + last, TEXTS * 4))
    for event_id in first:
        assert records[event_id]["labels_version"] == v1
        assert records[event_id]["label"] in {"spam", "billing question", "praise"}
    for event_id in after + last:  # after the reload, and after the broken file: the new labels
        record = records[event_id]
        assert record["labels_version"] == v2
        if text_of[event_id] in SHIPPING_TEXTS:
            assert record["label"] == "shipping", record
        if text_of[event_id] in SPAM_TEXTS:
            assert record["label"] == "unsure" and record["labels"][0]["label"] == "spam", record
    for event_id in during:
        assert records[event_id]["labels_version"] in {v1, v2}
    for record in records.values():  # each record's labels are those of its own version
        names = {item["label"] for item in record["labels"]}
        assert ("shipping" in names) <= (record["labels_version"] == v2)
    # The new set is used from a window on: per partition, never the old version after the new one.
    by_partition: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for message in labels:
        by_partition[message.partition()].append((message.offset(), orjson.loads(message.value())["labels_version"]))
    for versions in by_partition.values():
        sequence = [version for _, version in sorted(versions)]
        assert sequence == sorted(sequence, key=lambda version: version == v2), sequence
