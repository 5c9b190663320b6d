"""Live reload of the labels file: the model stage asks for the label set before each window.

The file is read again every `interval_s` (a few KiB; reading the content, not trusting mtimes,
also sees a Kubernetes ConfigMap update, which swaps a symlink to a new directory). Changed
content that loads is embedded on the caller's thread (the model stage's, between windows) and
becomes the label set from the next window on. Content that does not load changes nothing: the
error is logged with the file and the reason and counted, once per distinct content.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from worker.labels import LabelsDefinition, LabelsFileError, LabelSet, parse_labels_file
from worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)


class LabelsReloader:
    def __init__(
        self,
        path: Path,
        interval_s: float,
        current: LabelSet,
        embed: Callable[[LabelsDefinition], LabelSet],
        metrics: WorkerMetrics,
        now: float,
    ) -> None:
        self.path = Path(path)
        self.interval_s = interval_s
        self.embed = embed
        self.metrics = metrics
        self._current = current
        # The content last looked at (loaded or not); None: compare the first read by its version.
        self._seen: bytes | None = None
        self._read_error: str | None = None  # reported once, until the file reads again
        self._next_check = now + interval_s
        self._publish_active()

    def label_set(self, now: float) -> LabelSet:
        """The label set for the next window; reads the file when a check is due."""
        if now < self._next_check:
            return self._current
        self._next_check = now + self.interval_s
        try:
            content = self.path.read_bytes()
        except OSError as exc:
            reason = exc.strerror or repr(exc)
            if reason != self._read_error:
                self._read_error = reason
                self._failed(reason)
            return self._current
        self._read_error = None
        if content == self._seen:
            return self._current
        self._seen = content
        try:
            definition = parse_labels_file(content, self.path)
        except LabelsFileError as exc:
            self._failed(str(exc).removeprefix(f"{self.path}: "))
            return self._current
        if definition.version == self._current.version:
            return self._current  # laid out differently, same labels
        started = time.monotonic()
        try:
            label_set = self.embed(definition)
        except Exception as exc:  # noqa: BLE001 - the labels in use still work
            self._failed(f"embedding the labels failed: {exc!r}")
            return self._current
        log.info(
            "labels reloaded",
            extra={
                "file": str(self.path),
                "labels_version": label_set.version,
                "previous_version": self._current.version,
                "labels": len(label_set.names),
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        self.metrics.labels_reloads.add(1, {"result": "ok"})
        self._current = label_set
        self._publish_active()
        return label_set

    def _failed(self, reason: str) -> None:
        log.error(
            "labels file %s not loaded, keeping the labels in use: %s",
            self.path,
            reason,
            extra={"file": str(self.path), "error": reason, "labels_version": self._current.version},
        )
        self.metrics.labels_reloads.add(1, {"result": "failed"})

    def _publish_active(self) -> None:
        version = (("labels_version", self._current.version),)
        self.metrics.replace_gauge("labels.active", {version: len(self._current.names)})
