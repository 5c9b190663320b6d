"""The near-free model of the host-capacity benchmark: 2 layers, 32 wide, the MiniLM tokenizer.

Random weights, built offline (no model hub) with `save_pretrained` next to the packaged MiniLM's
tokenizer files, so the worker loads it like any model directory. Its forward pass costs next to
nothing, which leaves the worker's own Python work (polling, tokenizing, batching, publishing) as
what limits it. Built once per version of this recipe and cached in the temp directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# The tests' tiny BERT (tests/support/model_support.py, seeded: the same weights on every build).
# Bump when that recipe changes, so that an old cached copy is not reused.
RECIPE = "bert-2x32-v1"


def cache_dir() -> Path:
    return Path(os.environ.get("BENCH_CACHE_DIR") or Path(tempfile.gettempdir()) / "encoder-worker-bench")


def near_free_model(cache: Path | None = None) -> Path:
    """The model's directory, built on first use; safe when several benchmarks start at once."""
    target = (cache or cache_dir()) / f"near-free-{RECIPE}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _build(building)
        try:
            building.rename(target)  # atomic: a reader sees the whole directory or none
        except OSError:
            if not (target / "config.json").is_file():  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


def _build(directory: Path) -> None:
    from tests.support.model_support import save_tiny_model

    save_tiny_model(directory, "bert")
