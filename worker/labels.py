"""Labels files for embedding-only models: each label with a description and example texts."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

DEFAULT_LABELS_FILE = Path(str(resources.files("worker") / "data" / "moderation-labels.yaml"))


class LabelsFileError(ValueError):
    pass


@dataclass(frozen=True)
class LabelSpec:
    name: str
    texts: tuple[str, ...]


def load_labels_file(path: Path) -> list[LabelSpec]:
    """Read a YAML (or JSON) labels file: `labels: [{name, description?, examples?}, ...]`."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise LabelsFileError(f"{path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise LabelsFileError(f"{path}: not valid YAML/JSON: {exc}") from exc
    items = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise LabelsFileError(f"{path}: expected a non-empty list under `labels:`")
    specs: list[LabelSpec] = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
            raise LabelsFileError(f"{path}: label #{number} needs a `name` string")
        description = item.get("description")
        examples = item.get("examples") or []
        if description is not None and not isinstance(description, str):
            raise LabelsFileError(f"{path}: label {item['name']!r}: `description` must be a string")
        if not isinstance(examples, list) or not all(isinstance(text, str) and text.strip() for text in examples):
            raise LabelsFileError(f"{path}: label {item['name']!r}: `examples` must be a list of non-empty strings")
        texts = tuple(([description] if description else []) + examples)
        if not texts:
            raise LabelsFileError(f"{path}: label {item['name']!r} needs a description or examples")
        specs.append(LabelSpec(item["name"].strip(), texts))
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise LabelsFileError(f"{path}: label names must be unique")
    return specs
