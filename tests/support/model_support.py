"""Tiny random encoders with a classification head, built offline with the MiniLM tokenizer."""

from __future__ import annotations

from pathlib import Path

import orjson
import torch
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    ModernBertConfig,
)

from worker.encoder import default_model_path

LABELS = {0: "ham", 1: "spam", 2: "toxic"}


# Encoder shapes: the tests' tiny one, and BERT-base's (the GPU run's stand-in for a fine-tuned classifier).
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}


def save_tiny_model(directory: Path, kind: str, multi_label: bool = False) -> Path:
    return save_random_classifier(directory, kind, TINY, multi_label=multi_label)


def save_random_classifier(
    directory: Path,
    kind: str,
    shape: dict[str, int],
    labels: dict[int, str] = LABELS,
    tokenizer_dir: Path | None = None,
    seed: int = 1234,
    multi_label: bool = False,
) -> Path:
    """A sequence classifier of this shape with seeded random weights and the MiniLM tokenizer
    (the packaged model's, unless `tokenizer_dir` names another copy of it)."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or default_model_path())
    common = dict(
        vocab_size=tokenizer.vocab_size,
        **shape,
        max_position_embeddings=512,
        num_labels=len(labels),
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
        pad_token_id=tokenizer.pad_token_id,
    )
    if multi_label:
        common["problem_type"] = "multi_label_classification"
    if kind == "bert":
        config = BertConfig(**common)
    elif kind == "modernbert":
        config = ModernBertConfig(
            **common,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            cls_token_id=tokenizer.cls_token_id,
            sep_token_id=tokenizer.sep_token_id,
            global_attn_every_n_layers=2,
            local_attention=16,
        )
    else:
        raise ValueError(kind)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# How close a worker's outputs must come to a float32 CPU reference, by the precision it chose
# (model.dtype `auto`: float16 on CUDA, bfloat16 on a CPU that computes it natively). Seen: float16
# rounds unit vectors at about 1e-3; bfloat16 at up to 2.5e-3 (tiny BERT, 300 mixed texts).
WORKER_OUTPUT_TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 1e-2}


def worker_precision(logs: str) -> str:
    """The precision a worker ran in, from its JSON "model loaded" log line."""
    for line in logs.splitlines():
        if line.startswith("{") and '"model loaded"' in line:
            record = orjson.loads(line)
            if record.get("message") == "model loaded":
                return str(record["dtype"])
    raise AssertionError("no 'model loaded' line in the worker's logs")


def worker_output_tolerance(logs: str) -> float:
    return WORKER_OUTPUT_TOLERANCE[worker_precision(logs)]


def reference_outputs(model_dir: Path, texts: list[str], max_length: int, pooling: str = "mean", normalize: bool = True):
    """What plain transformers says for these texts: (probabilities, embeddings), one text at a time.

    Independent of the worker's batching and padding on purpose.
    """
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    classifier = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    base = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    multi = classifier.config.problem_type == "multi_label_classification"
    probabilities, embeddings = [], []
    with torch.inference_mode():
        for text in texts:
            encoded = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
            logits = classifier(**encoded).logits[0]
            probabilities.append(torch.sigmoid(logits) if multi else torch.softmax(logits, -1))
            hidden = base(**encoded).last_hidden_state[0]
            vector = hidden[0] if pooling == "cls" else hidden.mean(0)
            embeddings.append(torch.nn.functional.normalize(vector, dim=-1) if normalize else vector)
    return torch.stack(probabilities).numpy(), torch.stack(embeddings).numpy()
