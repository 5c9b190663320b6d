"""Serialise output records (labels, embeddings, dead letters) to bytes. Pure; orjson only.

The record layouts are the contract in `worker.records`; a test validates these bytes against it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np
import orjson

from worker.labels import LabelSet
from worker.settings import EmbeddingEncoding

Headers = list[tuple[str, bytes]]

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


@dataclass(frozen=True, slots=True)
class SourceCoordinates:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None

    def as_dict(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
        }

    def default_id(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


class OutputSerializer:
    """Builds output values for one model; the per-window work is vectorised with numpy.

    The label set is the scored window's (`ScoredWindow.label_set`), not the serializer's: it can
    change between windows.
    """

    def __init__(
        self,
        model_name: str,
        scoring: str,
        top_k: int,
        embedding_encoding: EmbeddingEncoding,
        normalized: bool,
    ) -> None:
        self.model_name = model_name
        self.scoring = scoring
        self.top_k = top_k
        self.encoding = embedding_encoding
        self.normalized = normalized

    def top_labels(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices and scores of the best `top_k` labels per row, best first."""
        top_k = min(self.top_k, scores.shape[1])
        if top_k < scores.shape[1]:
            part = np.argpartition(-scores, top_k - 1, axis=1)[:, :top_k]
        else:
            part = np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)

    def label_columns(
        self, scores: np.ndarray, label_set: LabelSet
    ) -> tuple[list[str | None], list[list[str]], list[list[float]]]:
        """Per row of a window's `scores`: its label (the best, or the fallback), and the names and
        scores of its top `top_k` labels, best first. numpy once per window, plain lists per row."""
        indices, values = self.top_labels(scores)
        winners = label_set.winners(indices[:, 0], values[:, 0])
        return winners.tolist(), label_set.names_array[indices].tolist(), values.tolist()

    def labels_value(
        self,
        event_id: str,
        label_set: LabelSet,
        label: str | None,
        names: list[str],
        scores: list[float],
        source: dict,
        now_ms: int,
    ) -> bytes:
        """One row of `label_columns`."""
        return orjson.dumps(
            {
                "id": event_id,
                "label": label,
                "score": scores[0],
                "labels": [{"label": name, "score": score} for name, score in zip(names, scores)],
                "labels_version": label_set.version,
                "scoring": self.scoring,
                "model": self.model_name,
                "source": source,
                "produced_at_ms": now_ms,
            }
        )

    def embeddings_value(self, event_id: str, vector: np.ndarray, source: dict, now_ms: int) -> bytes:
        if self.encoding is EmbeddingEncoding.JSON:
            encoded: object = vector
        elif self.encoding is EmbeddingEncoding.BASE64_F16:
            encoded = base64.b64encode(vector.astype("<f2").tobytes()).decode("ascii")
        else:
            encoded = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
        return orjson.dumps(
            {
                "id": event_id,
                "model": self.model_name,
                "dim": int(vector.shape[0]),
                "normalized": self.normalized,
                "encoding": self.encoding.value,
                "vector": encoded,
                "source": source,
                "produced_at_ms": now_ms,
            },
            option=_NUMPY,
        )


def dead_letter_headers(
    original: Headers | None, reason: str, message: str, source: SourceCoordinates, worker_id: str
) -> Headers:
    headers = list(original or [])
    headers += [
        ("dlq.error.type", reason.encode()),
        ("dlq.error.message", message.encode("utf-8", "replace")[:4096]),
        ("dlq.source.topic", source.topic.encode()),
        ("dlq.source.partition", str(source.partition).encode()),
        ("dlq.source.offset", str(source.offset).encode()),
        ("dlq.worker", worker_id.encode()),
    ]
    if source.timestamp_ms is not None:
        headers.append(("dlq.source.timestamp_ms", str(source.timestamp_ms).encode()))
    return headers


def decode_vector(record: dict) -> np.ndarray:
    """Read an embeddings record's vector back into numpy, whatever its encoding (for consumers and tests)."""
    encoding = record["encoding"]
    if encoding == "json":
        return np.asarray(record["vector"], dtype=np.float32)
    raw = base64.b64decode(record["vector"])
    return np.frombuffer(raw, dtype="<f2" if encoding == "base64-f16" else "<f4").astype(np.float32)
