"""The event contract: the input event and the output records, as pydantic models.

`schemas/*.schema.json` are generated from these models (`python -m worker.schemas`), and other
teams build against those files. The hot path serialises plain dicts with orjson for speed; a test
validates what it writes against these models so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_ID_CHARS = 1024


class InputEvent(BaseModel):
    """A text event, the value of an input record (UTF-8 JSON)."""

    model_config = ConfigDict(
        extra="allow",
        title="InputEvent",
        json_schema_extra={"$id": "https://encoder-worker.dev/schemas/input-event.schema.json"},
    )

    id: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_ID_CHARS,
        description="Event id, copied to every output. Default: `topic:partition:offset` of the record.",
    )
    text: str = Field(..., min_length=1, description="The text to classify and embed; not blank.")
    metadata: dict[str, Any] | None = Field(
        None, description="Free-form object; not interpreted by the worker."
    )


class SourceRef(BaseModel):
    """Where the input record came from."""

    model_config = ConfigDict(extra="forbid", title="SourceRef")

    topic: str
    partition: int = Field(..., ge=0)
    offset: int = Field(..., ge=0)
    timestamp_ms: int | None = Field(None, description="The input record's Kafka timestamp (ms since epoch).")


class LabelScore(BaseModel):
    model_config = ConfigDict(extra="forbid", title="LabelScore")

    label: str
    score: float


class LabelsRecord(BaseModel):
    """Value of a record on the labels topic; keyed and headed like its input record."""

    model_config = ConfigDict(
        extra="forbid",
        title="LabelsRecord",
        json_schema_extra={"$id": "https://encoder-worker.dev/schemas/labels-record.schema.json"},
    )

    id: str
    label: str | None = Field(
        ...,
        description="The winning label: the best-scoring label, or, when its score is under that label's "
        "`threshold` in the labels file, the file's `fallback` label (null when the file names none).",
    )
    score: float = Field(
        ...,
        description="The best-scoring label's score (also when `label` is the fallback): a probability for "
        "classification heads, a cosine similarity for labels-file scoring.",
    )
    labels: list[LabelScore] = Field(
        ..., min_length=1, description="Top-k labels with their scores, best first, whatever the thresholds."
    )
    labels_version: str = Field(
        ...,
        min_length=1,
        description="Short content hash of the label set that scored this event (the labels file's labels, "
        "texts, thresholds and fallback; a classification head's label map). Changes when the labels do.",
    )
    scoring: Literal["softmax", "sigmoid", "cosine"] = Field(..., description="How the scores were computed.")
    model: str
    source: SourceRef
    produced_at_ms: int = Field(..., description="When the worker produced this record (ms since epoch).")


class EmbeddingsRecord(BaseModel):
    """Value of a record on the embeddings topic; keyed and headed like its input record."""

    model_config = ConfigDict(
        extra="forbid",
        title="EmbeddingsRecord",
        json_schema_extra={"$id": "https://encoder-worker.dev/schemas/embeddings-record.schema.json"},
    )

    id: str
    model: str
    dim: int = Field(..., gt=0)
    normalized: bool = Field(..., description="Whether the vector is L2-normalised.")
    encoding: Literal["json", "base64-f32", "base64-f16"] = Field(
        ...,
        description="`json`: `vector` is a float array. `base64-f32`/`base64-f16`: `vector` is base64 of "
        "little-endian float32/float16 values.",
    )
    vector: list[float] | str
    source: SourceRef
    produced_at_ms: int


# Headers the worker adds to a dead-letter record; the original key, value and headers are kept
# (a `record_too_large` record goes without its value: see worker/intake.py).
DEAD_LETTER_HEADERS: dict[str, str] = {
    "dlq.error.type": "Machine-readable reason, e.g. `invalid_json`, `empty_text` (see docs).",
    "dlq.error.message": "Human-readable explanation.",
    "dlq.source.topic": "Input topic.",
    "dlq.source.partition": "Input partition (decimal).",
    "dlq.source.offset": "Input offset (decimal).",
    "dlq.source.timestamp_ms": "Input record timestamp, ms since epoch (decimal), when it had one.",
    "dlq.worker": "Identity of the worker that rejected it.",
}

SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "input-event.schema.json": InputEvent,
    "labels-record.schema.json": LabelsRecord,
    "embeddings-record.schema.json": EmbeddingsRecord,
}
