"""The publish stage with a fake producer: what each entry of a scored window turns into."""

from __future__ import annotations

import queue

import numpy as np
import orjson

from worker.batcher import Window
from worker.commits import AtLeastOnceCommits
from worker.decoding import Reason, Rejection
from worker.entries import Entry, ScoredWindow
from worker.errors import FirstFailure
from worker.labels import LabelSet
from worker.metrics import WorkerMetrics
from worker.offsets import OffsetTracker
from worker.outputs import OutputSerializer, SourceCoordinates
from worker.publisher import Publisher
from worker.settings import EmbeddingEncoding, TopicSettings


class FakeProducer:
    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes | None, dict[str, bytes]]] = []
        self.callbacks: list = []

    def produce(self, topic, value, key, headers=None, on_delivery=None):  # type: ignore[no-untyped-def]
        self.produced.append((topic, value, dict(headers or [])))
        self.callbacks.append(on_delivery)

    def poll(self, timeout: float) -> int:
        return 0


def test_intake_and_model_rejections_go_to_the_dead_letter_topic_and_the_rest_get_both_outputs():
    tracker = OffsetTracker()
    entries = [
        Entry(SourceCoordinates("in", 0, i, None), b"k", b'{"text":"x"}', None, tracker.track("in", 0, i), event_id=f"e{i}", token_ids=[1])
        for i in range(4)
    ]
    entries[0].rejection = Rejection(Reason.NULL_VALUE, "no value")  # as intake sets it
    entries[0].token_ids = None
    window = Window(entries, [None, 1, 1, 1], [[1, 2, 3]])
    label_set = LabelSet(("a", "b"), "v1", np.zeros(2, dtype=np.float32))
    scored = ScoredWindow(
        window,
        np.ones((4, 3), dtype=np.float32),
        np.array([[0, 0], [0.9, 0.1], [0, 0], [0.2, 0.8]], dtype=np.float32),
        label_set,
        model_rejections={2: Rejection(Reason.MODEL_ERROR, "the model failed on this text")},
    )
    producer = FakeProducer()
    topics = TopicSettings(input=["in"], labels="labels", embeddings="emb", dead_letter="dlq")
    commits = AtLeastOnceCommits(tracker, FirstFailure(), WorkerMetrics(), 0.5)
    publisher = Publisher(
        producer,  # type: ignore[arg-type]
        OutputSerializer("m", "softmax", 2, EmbeddingEncoding.JSON, True),
        topics, commits, queue.Queue(), FirstFailure(), WorkerMetrics(), "w1",
    )
    publisher.publish(scored)
    assert [topic for topic, _, _ in producer.produced] == ["dlq", "labels", "emb", "dlq", "labels", "emb"]
    dead = [headers for topic, _, headers in producer.produced if topic == "dlq"]
    assert [h["dlq.error.type"] for h in dead] == [b"null_value", b"model_error"]
    labels = [orjson.loads(value) for topic, value, _ in producer.produced if topic == "labels"]
    assert [(r["id"], r["label"]) for r in labels] == [("e1", "a"), ("e3", "b")]
    for callback in producer.callbacks[:-1]:
        callback(None, None)
    assert tracker.open_count() == 4  # one output of the window is not yet acknowledged
    producer.callbacks[-1](None, None)
    assert tracker.open_count() == 0 and tracker.committable() == {("in", 0): 4}
