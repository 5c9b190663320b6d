"""What flows between the stages: one entry per consumed record, one scored window per batch window."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from opentelemetry.trace import SpanContext

from worker.batcher import Window
from worker.decoding import Rejection
from worker.labels import LabelSet
from worker.offsets import OffsetEntry
from worker.outputs import Headers, SourceCoordinates


@dataclass(slots=True)
class Entry:
    """One consumed record, as intake made it; later stages read it and never change it."""

    source: SourceCoordinates
    key: bytes | None
    value: bytes | None
    headers: Headers | None
    offset: OffsetEntry
    event_id: str | None = None
    token_ids: list[int] | None = None
    rejection: Rejection | None = None
    # Wall-clock time the record was consumed, ns since epoch (start of its trace span).
    consumed_ns: int = 0
    # The record's `traceparent`, when tracing is on and it had one.
    trace_context: SpanContext | None = None


@dataclass(slots=True)
class ScoredWindow:
    """A window after the model: rows of `embeddings`/`scores` line up with `window.entries`.

    Rows of rejected entries are left unset. `label_set` is the one the scores' columns belong to:
    the window is rendered with it even if a newer one has been loaded since. `model_rejections`:
    entries (by index) the model failed on, which go to the dead-letter topic like intake's rejections.
    """

    window: Window[Entry]
    embeddings: np.ndarray
    scores: np.ndarray
    label_set: LabelSet
    model_seconds: float = 0.0
    model_rejections: dict[int, Rejection] = field(default_factory=dict)

    def rejections(self) -> dict[int, Rejection]:
        """The entries (by index) that get a dead letter instead of outputs, and why."""
        rejected = {i: entry.rejection for i, entry in enumerate(self.window.entries) if entry.rejection is not None}
        rejected.update(self.model_rejections)
        return rejected
