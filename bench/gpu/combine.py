"""docs/benchmarks-gpu.md from what run_on_device.sh brought back: one document, two models.

    python bench/gpu/combine.py FILES_AT [--out docs/benchmarks-gpu.md]

FILES_AT holds benchmarks-gpu.md (bench/run.py with the default model, MiniLM, and the
host-capacity section of bench/host_capacity.py) and benchmarks-gpu-bert-base.md (bench/run.py
with the BERT-base-shaped classifier). The result is the first as it is, with a note on the
models' random weights under its title, then the second under a heading of its own, its headings
one level down (code blocks left alone), less the "Tried and measured" pointer both carry.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.sections import TRIED_AND_MEASURED  # noqa: E402

NOTE = (
    "Both models ran with random weights, built offline by `bench/gpu/models.py` (the device has no model "
    "hub and the packaged MiniLM's weights do not travel): all-MiniLM-L6-v2's own config and tokenizer, and a "
    "BERT-base-shaped classifier (12 layers, hidden 768, 12 heads, intermediate 3072, four labels, the MiniLM "
    "tokenizer) standing for a fine-tuned moderation model. Random weights cost the same time per pass as "
    "trained ones; the labels they give mean nothing. Run by `bench/gpu/run_on_device.sh`: the default model "
    "first, then the host-capacity section (the near-free model), then [the BERT-base-shaped "
    "model](#bert-base-shaped-classifier)."
)
BERT_HEADING = "## BERT-base-shaped classifier"


def demote(markdown: str) -> str:
    """Every heading one level down, outside fenced code blocks."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            line = "#" + line
        lines.append(line)
    return "\n".join(lines)


def combine(minilm: str, bert: str) -> str:
    title, _, rest = minilm.partition("\n")
    # The BERT report's own title ("# Benchmarks") and its "written by" line are the first document's too.
    bert_body = bert.split("\n", 1)[1].lstrip("\n")
    if bert_body.startswith("Written by"):
        bert_body = bert_body.split("\n", 1)[1].lstrip("\n")
    bert_body = TRIED_AND_MEASURED.remove(bert_body)  # the same pointer as the first's: kept once
    return f"{title}\n\n{NOTE}\n{rest.rstrip()}\n\n{BERT_HEADING}\n\n{demote(bert_body).rstrip()}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", type=Path, help="the folder run_on_device.sh's $OUT came back to")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks-gpu.md")
    args = parser.parse_args(argv)
    minilm = (args.files / "benchmarks-gpu.md").read_text()
    bert_path = args.files / "benchmarks-gpu-bert-base.md"
    if not bert_path.is_file():
        print(f"no {bert_path}: writing the default model's report alone", file=sys.stderr)
        args.out.write_text(minilm)
        return 1
    args.out.write_text(combine(minilm, bert_path.read_text()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
