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

# Bump when the recipe below changes, so that an old cached copy is not reused.
RECIPE = "bert-2x32-v1"
LABELS = {0: "ham", 1: "spam", 2: "toxic"}


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
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

    from worker.encoder import default_model_path

    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=len(LABELS),
        id2label=LABELS,
        label2id={label: index for index, label in LABELS.items()},
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(1234)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
