"""Label sets: labels files for embedding-only models, and the label set a window is scored with.

A labels file names each label with a description and example texts, optionally a `threshold`
per label and a top-level `fallback` label for events whose best label is under its threshold.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

DEFAULT_LABELS_FILE = Path(str(resources.files("worker") / "data" / "moderation-labels.yaml"))

FILE_FIELDS = ("labels", "fallback")
LABEL_FIELDS = ("name", "description", "examples", "threshold")
VERSION_CHARS = 12


class LabelsFileError(ValueError):
    """A labels file that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class LabelSpec:
    name: str
    texts: tuple[str, ...]
    threshold: float | None = None


@dataclass(frozen=True)
class LabelsDefinition:
    """What a labels file says, before its texts are embedded."""

    labels: tuple[LabelSpec, ...]
    fallback: str | None = None

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.labels]

    @property
    def version(self) -> str:
        """Short content hash: the same labels, texts, thresholds and fallback give the same version,
        however the file is laid out."""
        return content_version(
            {
                "labels": [{"name": s.name, "texts": list(s.texts), "threshold": s.threshold} for s in self.labels],
                "fallback": self.fallback,
            }
        )


def content_version(payload: Any) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:VERSION_CHARS]


def load_labels_file(path: Path) -> LabelsDefinition:
    """Read a YAML (or JSON) labels file: `labels: [{name, description?, examples?, threshold?}, ...]`,
    `fallback: NAME?`."""
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise LabelsFileError(f"{path}: {exc.strerror}") from exc
    return parse_labels_file(content, path)


def parse_labels_file(content: bytes, path: Path | str) -> LabelsDefinition:
    try:
        data = yaml.safe_load(content)
    except yaml.YAMLError as exc:
        raise LabelsFileError(f"{path}: not valid YAML/JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise LabelsFileError(f"{path}: not UTF-8 text: {exc}") from exc
    if not isinstance(data, dict):
        raise LabelsFileError(f"{path}: expected a mapping with a non-empty list under `labels:`")
    _reject_unknown(data, FILE_FIELDS, path, "")
    items = data.get("labels")
    if not isinstance(items, list) or not items:
        raise LabelsFileError(f"{path}: expected a non-empty list under `labels:`")
    specs: list[LabelSpec] = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
            raise LabelsFileError(f"{path}: label #{number} needs a `name` string")
        name = item["name"].strip()
        _reject_unknown(item, LABEL_FIELDS, path, f"label {name!r}: ")
        description = item.get("description")
        examples = item.get("examples") or []
        if description is not None and not isinstance(description, str):
            raise LabelsFileError(f"{path}: label {name!r}: `description` must be a string")
        if not isinstance(examples, list) or not all(isinstance(text, str) and text.strip() for text in examples):
            raise LabelsFileError(f"{path}: label {name!r}: `examples` must be a list of non-empty strings")
        texts = tuple(([description] if description else []) + examples)
        if not texts:
            raise LabelsFileError(f"{path}: label {name!r} needs a description or examples")
        specs.append(LabelSpec(name, texts, _threshold(item.get("threshold"), path, name)))
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise LabelsFileError(f"{path}: label names must be unique; repeated: {', '.join(duplicates)}")
    fallback = data.get("fallback")
    if fallback is not None and (not isinstance(fallback, str) or not fallback.strip()):
        raise LabelsFileError(f"{path}: `fallback` must be a label name (a non-empty string)")
    return LabelsDefinition(tuple(specs), fallback.strip() if fallback is not None else None)


def _reject_unknown(mapping: dict, known: tuple[str, ...], path: Path | str, where: str) -> None:
    unknown = sorted(str(key) for key in mapping if key not in known)
    if unknown:
        raise LabelsFileError(
            f"{path}: {where}unknown field(s) {', '.join(unknown)}; expected {', '.join(known)}"
        )


def _threshold(value: Any, path: Path | str, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0 or math.isnan(value):
        raise LabelsFileError(f"{path}: label {name!r}: `threshold` must be a number from 0.0 to 1.0 (got {value!r})")
    return float(value)


@dataclass(frozen=True, eq=False)
class LabelSet:
    """The labels a window is scored and rendered with, swapped as a whole between windows.

    `matrix` holds the labels' unit embeddings (labels × dim, on the model's device) for cosine
    scoring; classification heads have none.
    """

    names: tuple[str, ...]
    version: str
    thresholds: np.ndarray  # float32 per label; -inf where a label has none
    fallback: str | None = None
    matrix: Any = None
    names_array: np.ndarray = field(init=False, repr=False)
    has_thresholds: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names_array", np.array(self.names, dtype=object))
        object.__setattr__(self, "has_thresholds", bool(np.isfinite(self.thresholds).any()))

    def winners(self, best_indices: np.ndarray, best_scores: np.ndarray) -> np.ndarray:
        """Each row's `label`: its best label, or the fallback (None when there is none) where the
        best score is under that label's threshold. One numpy pass per window."""
        names = self.names_array[best_indices]
        if not self.has_thresholds:
            return names
        return np.where(best_scores >= self.thresholds[best_indices], names, self.fallback)


def file_label_set(definition: LabelsDefinition, matrix: Any) -> LabelSet:
    thresholds = np.array(
        [-np.inf if spec.threshold is None else spec.threshold for spec in definition.labels], dtype=np.float32
    )
    return LabelSet(tuple(definition.names), definition.version, thresholds, definition.fallback, matrix)


def head_label_set(names: list[str]) -> LabelSet:
    """A classification head's fixed label map: no thresholds, no fallback; versioned by the map."""
    return LabelSet(
        tuple(names), content_version({"label_map": list(names)}), np.full(len(names), -np.inf, dtype=np.float32)
    )
