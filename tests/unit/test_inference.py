"""The model stage's handling of a batch the model fails on: retried one by one, the culprit dead-lettered."""

from __future__ import annotations

import queue

import numpy as np

from worker.batcher import Window
from worker.decoding import Reason
from worker.encoder import EncodedBatch
from worker.entries import Entry, ScoredWindow
from worker.errors import FirstFailure
from worker.inference import InferenceStage
from worker.labels import LabelSet
from worker.metrics import WorkerMetrics
from worker.offsets import OffsetTracker
from worker.outputs import SourceCoordinates

POISON = 666


class FailingModel:
    """Fails on any batch holding the token POISON; otherwise each row's embedding is its first token."""

    dim = 2
    label_set = LabelSet(("a", "b"), "v1", np.zeros(2, dtype=np.float32))

    def __init__(self) -> None:
        self.calls: list[int] = []

    def encode(self, token_ids: list[list[int]], label_set: LabelSet | None = None) -> EncodedBatch:
        self.calls.append(len(token_ids))
        if any(POISON in ids for ids in token_ids):
            raise RuntimeError("CUDA error: device-side assert triggered")
        first = np.array([[ids[0], 0.0] for ids in token_ids], dtype=np.float32)
        return EncodedBatch(first, np.full((len(token_ids), 2), 0.5, dtype=np.float32))


def window(token_ids: list[list[int]]) -> Window[Entry]:
    tracker = OffsetTracker()
    entries = [
        Entry(SourceCoordinates("in", 0, i, None), None, b"{}", None, tracker.track("in", 0, i), event_id=f"e{i}", token_ids=ids)
        for i, ids in enumerate(token_ids)
    ]
    return Window(entries, [len(ids) for ids in token_ids], [list(range(len(token_ids)))])


def stage(model: FailingModel) -> InferenceStage:
    return InferenceStage(model, queue.Queue(), queue.Queue(), FirstFailure(), WorkerMetrics())


def test_a_failed_batch_is_retried_one_by_one_and_only_the_culprit_is_rejected():
    model = FailingModel()
    batch = window([[1, 2], [POISON, 3], [4]])
    scored: ScoredWindow = stage(model).score(batch)
    assert model.calls == [3, 1, 1, 1]
    assert scored.embeddings[:, 0].tolist() == [1.0, 0.0, 4.0]
    assert set(scored.model_rejections) == {1}
    assert list(scored.rejections()) == [1]
    assert scored.rejections()[1].reason == Reason.MODEL_ERROR
    assert "device-side assert" in scored.rejections()[1].message
    # The entry as intake made it is not changed by the model stage.
    assert batch.entries[1].rejection is None


def test_a_window_the_model_scores_has_no_rejections():
    scored = stage(FailingModel()).score(window([[1], [2]]))
    assert scored.model_rejections == {}
