"""The benchmark: the model alone, two simple workers and this worker, on the same events.

    .venv/bin/python bench/run.py                  # the full run (~17 min on 2 CPU cores)
    .venv/bin/python bench/run.py --quick          # a few minutes; writes no file unless --out
    .venv/bin/python bench/run.py --events 1000 --out /tmp/bench.md
    # on a GPU: more events, the batch settings of helm's ci/gpu-values.yaml, the slow loops on a subset
    .venv/bin/python bench/run.py --events 20000 --baseline-events 1500 --set batch.max_size=256 \
        --set batch.max_tokens=65536 --set batch.sort_window=2048 --set batch.queue_depth=2 \
        --out docs/benchmarks-gpu.md

Starts a local broker (or uses KAFKA_BOOTSTRAP_SERVERS), and measures, in this order:
the best batch size for the model alone, at the worker's precision and (where that is not
float32) in float32, and how far the two precisions' outputs differ over the whole set; then
rounds of [model alone, float32 model alone, this worker] side by side, with the naive and the fixed-chunk workers in between; latency at a light fixed rate;
memory with a 200,000-event backlog (as configured, then with its heap
trimming off). Prints a table, writes docs/benchmarks.md, and exits 1
when a target is missed.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import shlex
import sys
import time
import uuid
from pathlib import Path

# This checkout's worker and bench packages, ahead of any installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench import baselines, ceiling, dataset, machine, phases, report  # noqa: E402
from bench.phases import log  # noqa: E402
from bench.sections import HOST_CAPACITY, TRIED_AND_MEASURED  # noqa: E402
from bench.topics import CommitWatcher, InputWriter, OutputReader, broker, fresh_topics  # noqa: E402
from bench.worker_process import RssSampler, WorkerProcess  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, help="events in the throughput set (default 3000; --quick 600)")
    parser.add_argument("--rounds", type=int, help="side-by-side rounds of model alone and worker (default 5: the machine drifts, medians need rounds)")
    parser.add_argument("--backlog", type=int, help="events queued before the memory run (default 200000)")
    parser.add_argument("--backlog-seconds", type=float, help="how long the worker works the backlog (default 75)")
    parser.add_argument("--latency-seconds", type=float, help="duration of the light-load run (default 30)")
    parser.add_argument("--latency-rate", type=float, default=10.0, help="events/s of the light-load run (default 10)")
    parser.add_argument("--retries", type=int, default=2,
                        help="rounds run again when other processes were busy during them (default 2)")
    parser.add_argument("--quiet-wait", type=float, default=20.0,
                        help="before each phase, wait up to this many seconds for other load to drop (default 20)")
    parser.add_argument("--baseline-events", type=int,
                        help="events the naive and fixed-chunk loops take (default: all; they are slow on a GPU)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="a worker setting for every worker of the run and the model alone, e.g. "
                             "batch.max_tokens=32768 (as WORKER_BATCH__MAX_TOKENS); repeatable")
    parser.add_argument("--quick", action="store_true", help="small sizes for development; no file unless --out")
    parser.add_argument("--out", type=Path, help=f"markdown report to write (default {DEFAULT_OUT.name})")
    args = parser.parse_args(argv)
    quick = args.quick
    args.events = args.events or (600 if quick else 3000)
    args.rounds = args.rounds or (1 if quick else 5)
    args.backlog = args.backlog or (20_000 if quick else 200_000)
    args.backlog_seconds = args.backlog_seconds or (20.0 if quick else 75.0)
    args.latency_seconds = args.latency_seconds or (10.0 if quick else 30.0)
    if args.out is None and not quick:
        args.out = DEFAULT_OUT
    args.overrides = parse_overrides(parser, args.overrides)
    return args


def parse_overrides(parser: argparse.ArgumentParser, pairs: list[str]) -> dict[str, dict[str, str]]:
    """["batch.max_tokens=32768"] -> {"batch": {"max_tokens": "32768"}}."""
    sections: dict[str, dict[str, str]] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        section, dot, name = key.strip().partition(".")
        if not (equals and dot and section and name) or "." in name:
            parser.error(f"--set {pair!r}: expected SECTION.FIELD=VALUE, e.g. batch.max_tokens=32768")
        sections.setdefault(section, {})[name] = value
    return sections


def worker_settings(overrides: dict[str, dict[str, str]]) -> dict[str, str]:
    """The overrides as `WorkerProcess` keyword arguments (batch__max_tokens -> WORKER_BATCH__MAX_TOKENS)."""
    return {f"{section}__{name}": value for section, fields in overrides.items() for name, value in fields.items()}


def sweep_sizes(quick: bool, device: str) -> tuple[int, ...]:
    """Batch sizes tried for the model alone; a GPU is fastest with far larger batches than a CPU."""
    sizes = (32, 64) if quick else (16, 32, 64, 128)
    return sizes + ((256, 512) if device.startswith("cuda") else ())


def worker_consumer_setting(name: str, librdkafka_default: object) -> object:
    """A consumer property as the worker sets it (its defaults, then the bench's overrides)."""
    from worker.kafka_clients import CONSUMER_DEFAULTS

    from bench.topics import FAST_GROUP

    return {**CONSUMER_DEFAULTS, **FAST_GROUP}.get(name, librdkafka_default)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python bench/run.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    from worker.memory import tune_allocator

    # The model alone and the two simple workers (all in this process) get the worker's malloc
    # settings too: they spare the model's passes page faults, and the ceiling is the model at its best.
    allocator_tuned = tune_allocator()
    from worker.cli import encoder_options
    import torch

    from worker.encoder import Encoder, cpu_capabilities
    from worker.precision import native_bfloat16_feature
    from worker.settings import BatchSettings, ModelSettings, WorkerSettings

    unknown = set(args.overrides) - set(WorkerSettings.model_fields)
    if unknown:
        raise SystemExit(f"--set: no settings section {sorted(unknown)}; sections: {', '.join(WorkerSettings.model_fields)}")
    # Both sections go through the worker's own validation, so a typo fails here and names the field.
    model_defaults = ModelSettings(**args.overrides.get("model", {}))
    batch_defaults = BatchSettings(**args.overrides.get("batch", {}))
    overrides = worker_settings(args.overrides)
    texts = dataset.generate(args.events)
    log(f"data set: {texts.describe()}")
    encoder = Encoder(encoder_options(model_defaults))  # the options the worker builds from the same settings
    encoder.warm_up(batch_defaults.max_size, batch_defaults.max_tokens)
    # The float32 model alone: what the precision targets compare with (the same encoder where the
    # worker runs float32).
    float32 = encoder
    if encoder.dtype != torch.float32:
        float32 = Encoder(encoder_options(model_defaults.model_copy(update={"dtype": "float32"})))
        float32.warm_up(batch_defaults.max_size, batch_defaults.max_tokens)
    log(f"model precision: {encoder.precision.dtype} ({encoder.precision.reason})")
    token_ids = encoder.tokenize(texts.texts)
    real_tokens = sum(len(ids) for ids in token_ids)
    results = report.Results(
        command=command.strip(),
        quick=args.quick,
        machine=machine.describe(str(encoder.device)) | {"code": machine.code_state(str(REPO))},
        dataset=texts.describe() | {"tokens_mean": round(real_tokens / len(token_ids), 1),
                                    "tokens_median": sorted(map(len, token_ids))[len(token_ids) // 2],
                                    "truncated_at": model_defaults.max_length},
        settings={"model": encoder.name, "max_length": model_defaults.max_length,
                  "precision": encoder.precision.dtype, "precision_reason": encoder.precision.reason,
                  "native_bfloat16": native_bfloat16_feature(cpu_capabilities()) if encoder.device.type == "cpu" else None,
                  "trim_headroom_mb": model_defaults.trim_headroom_mb, "allocator_tuned": allocator_tuned,
                  **{f"batch.{k}": v for k, v in batch_defaults.model_dump().items()}},
    )
    monitor = machine.LoadMonitor()
    with broker() as (bootstrap, broker_pid):
        if broker_pid:
            monitor.watch(broker_pid)
        results.settings["broker"] = "local Tansu 0.6.0 (in memory)" if broker_pid else f"external {bootstrap}"

        def phase(name: str):  # type: ignore[no-untyped-def]
            return report.Phase(name, monitor, results.background, args.quiet_wait)

        # 1. The ceiling's batch size, on a length-stratified sample.
        sizes = sweep_sizes(args.quick, str(encoder.device))
        with phase("batch-size sweep"):
            best, sweep = ceiling.best_batch_size(encoder, token_ids, sizes, sample=min(600, len(token_ids)), repeats=2)
        # Light-load batches are small; their compute is the latency target's allowance.
        with phase("small batches"):
            small = ceiling.small_batch_table(encoder, token_ids)
        results.sweep = sweep
        best_float32 = best
        if float32 is not encoder:
            with phase("batch-size sweep, float32"):
                best_float32, results.sweep_float32 = ceiling.best_batch_size(
                    float32, token_ids, sizes, sample=min(600, len(token_ids)), repeats=2)
            log(f"float32 model alone, events/s by batch size: "
                f"{', '.join(f'{k}: {v:.0f}' for k, v in results.sweep_float32.items())}; best {best_float32}")
            results.precision_check = ceiling.compare_precisions(encoder, float32, token_ids, best)
            log(f"{encoder.precision.dtype} against float32, {results.precision_check.describe('events')}")
        if encoder.device.type == "cuda":
            # A GPU's first pass over the whole set's shapes pays for allocations and kernel choices
            # (seen: 11,000 events/s, then 77,000): untimed, so it does not skew the first round.
            ceiling.timed_pass(encoder, token_ids, best)
            if float32 is not encoder:
                ceiling.timed_pass(float32, token_ids, best_float32)
        log(f"model alone, events/s by batch size: {', '.join(f'{k}: {v:.0f}' for k, v in sweep.items())}; best {best}")

        # 2. Baseline input: the same events, already queued.
        base_topics = fresh_topics(bootstrap, "baselines")
        writer = InputWriter(bootstrap, base_topics.input)
        writer.send_all((f"e{i}", text) for i, text in enumerate(texts.texts))
        writer.flush()

        # 3. This worker, started once, idle until each round's events arrive.
        worker_topics = fresh_topics(bootstrap, "worker")
        group = f"bench-worker-{uuid.uuid4().hex[:6]}"
        worker = WorkerProcess(bootstrap, worker_topics, group, **overrides)
        monitor.watch(worker.pid)
        results.worker_env = worker.env
        try:
            worker.wait_for_log("worker started", timeout_s=180)
            worker.wait_for_log("partitions assigned", timeout_s=60)
            log("worker up and assigned")
            sampler = RssSampler(worker.pid)
            time.sleep(0.5)
            round_writer = InputWriter(bootstrap, worker_topics.input)
            watcher = CommitWatcher(bootstrap, group, worker_topics.input)
            timeout = max(180.0, len(token_ids) / 5)
            baseline_events = min(args.baseline_events or len(token_ids), len(token_ids))
            slow = [
                ("naive", lambda: baselines.naive_worker(
                    bootstrap, base_topics, f"naive-{uuid.uuid4().hex[:6]}", encoder, baseline_events,
                    timeout_s=max(300.0, baseline_events / 2))),
                ("fixed chunk", lambda: baselines.fixed_chunk_worker(
                    bootstrap, base_topics, f"chunk-{uuid.uuid4().hex[:6]}", encoder, baseline_events,
                    timeout_s=max(300.0, float(baseline_events)))),
            ]
            # Rounds of [model alone, worker], then one last model-alone pass, so that every worker
            # round sits between two. A round during which other processes used more than
            # NOISY_SHARE of the CPUs is run again (at most --retries times in all) and left out of
            # the medians; it is still listed in the report.
            def model_alone() -> None:
                number = len(results.ceiling) + 1
                with phase(f"model alone #{number}") as timed:
                    ceiling_pass = ceiling.timed_pass(encoder, token_ids, best)
                results.ceiling.append(ceiling_pass)
                results.ceiling_share.append(timed.share)
                log(f"model alone: {ceiling_pass.events_per_s:.1f} events/s (batch {best}; others {timed.share:.0%})")
                if float32 is not encoder:
                    with phase(f"float32 model alone #{number}") as timed:
                        float32_pass = ceiling.timed_pass(float32, token_ids, best_float32)
                    results.ceiling_float32.append(float32_pass)
                    results.ceiling_share[-1] = max(results.ceiling_share[-1], timed.share)
                    log(f"float32 model alone: {float32_pass.events_per_s:.1f} events/s (batch {best_float32}; "
                        f"others {timed.share:.0%})")

            retries = args.retries
            while True:
                number = len(results.worker)
                model_alone()
                with phase(f"worker #{number + 1}") as timed:
                    result = phases.worker_round(worker, round_writer, watcher, texts.texts, real_tokens,
                                                 f"r{number}", timeout, broker_pid)
                results.worker.append(result)
                results.worker_share.append(timed.share)
                log(f"worker: {result.events_per_s:.1f} events/s ({result.seconds:.1f} s; others {timed.share:.0%})")
                noisy = max(timed.share, results.ceiling_share[-1]) > report.NOISY_SHARE
                if noisy and retries > 0:
                    retries -= 1
                    results.repeated.add(number)
                    log(f"round {number + 1} repeated: other processes were busy")
                clean = len(results.worker) - len(results.repeated)
                # The slow loops run between rounds, one per gap; whatever is left runs after the last.
                todo = slow[:1] if clean < args.rounds else slow
                for name, loop in todo:
                    with phase(name):
                        outcome = loop()
                    results.baselines.append(outcome)
                    log(f"{outcome.name}: {outcome.events_per_s:.1f} events/s, padding {outcome.padding:.2f}")
                slow = slow[len(todo):]
                if clean >= args.rounds:
                    break
            model_alone()
            watcher.close()
            sampler.stop()
            results.rounds_rss = (sampler.samples[0][1], sampler.peak())

            # 4. Every output is there (labels and embeddings for each event of each round).
            reader = OutputReader(bootstrap, [worker_topics.labels, worker_topics.embeddings])
            expected = len(token_ids) * len(results.worker)
            if not reader.read_until({worker_topics.labels: expected, worker_topics.embeddings: expected}, 180):
                raise RuntimeError(f"outputs missing: {reader.counts} (expected {expected} each)")
            results.outputs_checked = dict(reader.counts)

            # 5. Light load on the same, idle worker.
            fetch_wait = int(worker_consumer_setting("fetch.wait.max.ms", 500))
            results.fetch_delay = (fetch_wait, phases.fetch_delay(bootstrap, fetch_wait))
            log(f"broker: a consumer with fetch.wait.max.ms={fetch_wait} sees a record "
                f"{results.fetch_delay[1]:.0f} ms (p50) after it is produced")
            before = worker.stage_totals()
            with phase("light load"):
                results.latency = phases.light_load(bootstrap, worker_topics, reader, texts.texts,
                                                    args.latency_rate, args.latency_seconds)
            after = worker.stage_totals()
            batches = after.get("batched_events_count", 0) - before.get("batched_events_count", 0)
            batched = after.get("batched_events", 0) - before.get("batched_events", 0)
            # "One batch" is a batch as the worker formed them at this rate: its mean size, rounded up.
            rows = max(1, math.ceil(batched / batches)) if batches else 1
            results.light_batch_rows = rows
            results.light_batch_seconds = small.get(rows) or ceiling.small_batch_seconds(encoder, token_ids, rows)
            reader.close()
            del reader, round_writer, watcher
            log(f"light load: p50 {results.latency.percentile(0.5):.0f} ms, p99 {results.latency.percentile(0.99):.0f} ms")
        finally:
            code, stop_seconds = worker.stop(timeout_s=90)
            results.worker_exit = (code, stop_seconds)

        # 6. Memory with a backlog, in a fresh worker that starts with it queued.
        backlog_topics = fresh_topics(bootstrap, "backlog")
        _, fill_seconds = phases.fill_backlog(bootstrap, backlog_topics, texts.texts, args.backlog)
        log(f"backlog: {args.backlog} events queued in {fill_seconds:.0f} s")
        with phase("backlog"):
            backlog = phases.backlog_memory(bootstrap, backlog_topics, args.backlog, args.backlog_seconds,
                                            watch=monitor.watch, **overrides)
        results.backlog = backlog
        results.backlog_fill_seconds = fill_seconds
        log(f"backlog: idle RSS {backlog.idle_rss / 2**20:.0f} MiB, peak {backlog.peak_rss / 2**20:.0f} MiB")
        untrimmed_topics = fresh_topics(bootstrap, "backlog-untrimmed")
        phases.fill_backlog(bootstrap, untrimmed_topics, texts.texts, args.backlog)
        with phase("backlog, heap trimming off"):
            results.backlog_untrimmed = phases.backlog_memory(
                bootstrap, untrimmed_topics, args.backlog, args.backlog_seconds, watch=monitor.watch,
                **(overrides | report.UNTRIMMED))
        del writer
        gc.collect()  # the clients go before the broker does, without reconnect noise
        off = results.backlog_untrimmed
        log(f"backlog, heap trimming off: idle RSS {off.idle_rss / 2**20:.0f} MiB, peak {off.peak_rss / 2**20:.0f} MiB")

    text = report.render(results)
    print()
    print(report.console_table(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        # The host-capacity section is bench/host_capacity.py's and "Tried and measured" is kept by
        # hand: both stay as they are in the file this run replaces.
        previous = args.out.read_text() if args.out.exists() else None
        for section in (TRIED_AND_MEASURED, HOST_CAPACITY):
            text = section.carry_over(previous, text)
        args.out.write_text(text)
        log(f"wrote {args.out}")
    return 0 if all(target.passed is not False for target in report.targets(results)) else 1


if __name__ == "__main__":
    sys.exit(main())
