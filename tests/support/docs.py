"""Generated parts of the README (settings and metrics tables), so that they cannot drift.

`python -m tests.support.docs` rewrites them in place; tests/unit/test_docs.py checks them.
"""

from __future__ import annotations

import re
import sys
from enum import Enum
from pathlib import Path

from pydantic import BaseModel

from worker.metrics import METRICS, full_name
from worker.settings import WorkerSettings, env_name

README = Path(__file__).resolve().parents[2] / "README.md"


def _default(field) -> str:  # type: ignore[no-untyped-def]
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, list):
            return ",".join(value)
        return "`{}`" if value == {} else f"`{value}`"
    value = field.default
    if value is None:
        return "—"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        value = str(value).lower()
    return f"`{value}`" if value != "" else '`""`'


def settings_table() -> str:
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for section_name, section in WorkerSettings.model_fields.items():
        model = section.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for field_name, field in model.model_fields.items():
            default = _default(field)
            if section_name == "topics" and field_name == "input":
                default = "`events`"
            description = (field.description or "").replace("|", "\\|")
            rows.append(f"| `{env_name((section_name, field_name))}` | {default} | {description} |")
    return "\n".join(rows)


def metrics_table() -> str:
    rows = ["| Metric (OpenTelemetry name) | Kind | Unit | Meaning |", "| --- | --- | --- | --- |"]
    for short, (kind, unit, description) in METRICS.items():
        rows.append(f"| `{full_name(short)}` | {kind} | `{unit}` | {description} |")
    return "\n".join(rows)


BLOCKS = {"settings": settings_table, "metrics": metrics_table}


def render(text: str) -> str:
    for name, build in BLOCKS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        text = pattern.sub(lambda m: m.group(1) + build() + "\n" + m.group(2), text)
    return text


if __name__ == "__main__":
    current = README.read_text()
    README.write_text(render(current))
    sys.exit(0)
