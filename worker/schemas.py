"""Write (or check) `schemas/`: the JSON Schemas of the event contract, generated from `worker.records`."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from worker.decoding import Reason
from worker.records import DEAD_LETTER_HEADERS, SCHEMA_MODELS


def render_schemas() -> dict[str, bytes]:
    files = {
        name: model.model_json_schema(mode="validation") for name, model in SCHEMA_MODELS.items()
    }
    for schema in files.values():
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    files["dead-letter-headers.json"] = {
        "description": "Headers added to a dead-letter record; its key, value and original headers are kept as they were, "
        "except for `record_too_large`: no value (and no key or headers when they alone are over the limit).",
        "headers": DEAD_LETTER_HEADERS,
        "reasons": sorted(Reason.all()),
    }
    return {
        name: orjson.dumps(content, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        for name, content in files.items()
    }


def write_schemas(directory: Path, check: bool = False) -> int:
    stale = []
    for name, content in render_schemas().items():
        path = directory / name
        if check:
            if not path.exists() or path.read_bytes() != content:
                stale.append(str(path))
            continue
        directory.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    if stale:
        print("schemas out of date (run `encoder-worker schemas`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0
