"""Try changes to the worker before making them: side by side, same events, same machine.

    .venv/bin/python bench/experiments.py plans                  # model time of batch plans, no Kafka
    .venv/bin/python bench/experiments.py workers --variants default,max_tokens_16384
    .venv/bin/python bench/experiments.py latency --variants default,wait_out_max_wait,fetch_wait_10
    .venv/bin/python bench/experiments.py cpu --variants default,no_heap_trim

`plans` times the encoder over the batches each plan cuts from the same events (in arrival
order, windowed as the worker does). `workers` starts one worker process per variant (a
variant is patches from `bench.patches` plus WORKER_* settings), then runs rounds in which each
variant follows a model-alone pass of its own on the same events (the order rotates per round), and
reports events/s, the per-round ratios to those passes, the worker's CPU and its RSS. `latency`
runs the light-load measurement against each variant in turn. `cpu` runs the same events through
the model alone (in this process) and each variant, and prints where the CPU went: per thread,
user and system time, minor page faults — whether the worker's model threads do more work per
event than the model alone's, or other threads take their cores.
Prints markdown tables; nothing is written to docs/.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench import ceiling, dataset, machine, phases  # noqa: E402
from bench.patches import JEMALLOC  # noqa: E402
from bench.phases import log  # noqa: E402
from bench.report import markdown_table  # noqa: E402
from bench.thread_cpu import parse_stat, read_threads  # noqa: E402
from bench.topics import FAST_GROUP, CommitWatcher, InputWriter, OutputReader, broker, fresh_topics  # noqa: E402
from bench.worker_process import RssSampler, WorkerProcess  # noqa: E402

# name -> (patches from bench.patches, WORKER_* settings as keyword arguments); a key starting with
# "env:" sets a plain environment variable instead (the C allocator's, LD_PRELOAD).
FETCH_10 = {"kafka__consumer_config": {**FAST_GROUP, "fetch.wait.max.ms": 10}}
VARIANTS: dict[str, tuple[tuple[str, ...], dict[str, object]]] = {
    "default": ((), {}),
    "mmap_1mb": ((), {"env:MALLOC_MMAP_THRESHOLD_": str(1 << 20)}),
    "mmap_32mb": ((), {"env:MALLOC_MMAP_THRESHOLD_": str(32 << 20)}),
    "trim_per_window": (("trim_per_window",), {}),
    "switch_interval_5ms": (("switch_interval_5ms",), {}),
    "switch_interval_200us": (("switch_interval_200us",), {}),
    "one_arena": (("one_arena",), {}),
    "mmap_32mb_trim": (("trim_per_window",), {"env:MALLOC_MMAP_THRESHOLD_": str(32 << 20)}),
    "no_allocator_tuning": (("no_tune_allocator",), {}),
    "jemalloc": (("no_tune_allocator",), {"env:LD_PRELOAD": JEMALLOC}),
    "max_tokens_2048": ((), {"batch__max_tokens": 2048}),
    "max_tokens_8192": ((), {"batch__max_tokens": 8192}),
    "max_tokens_16384": ((), {"batch__max_tokens": 16384}),
    "max_size_32": ((), {"batch__max_size": 32}),
    "max_tokens_2048_no_trim": ((), {"batch__max_tokens": 2048, "model__trim_headroom_mb": 0}),
    "linger_50": ((), {"kafka__producer_config": {"linger.ms": 50}}),
    "wait_out_max_wait": ((), {"batch__close_when_idle": False}),
    "fetch_wait_10": ((), FETCH_10),
    "no_heap_trim": ((), {"model__trim_headroom_mb": 0}),
    "trim_128": ((), {"model__trim_headroom_mb": 128}),
    "trim_192": ((), {"model__trim_headroom_mb": 192}),
    "arenas_per_thread_no_trim": (("no_tune_allocator",), {"model__trim_headroom_mb": 0}),
    "dynamic_thresholds": (("dynamic_malloc_thresholds",), {}),
    "dynamic_thresholds_no_trim": (("dynamic_malloc_thresholds",), {"model__trim_headroom_mb": 0}),
    "trim_mid_pass": (("trim_mid_pass",), {}),
    "log_heap": (("log_heap",), {}),
    "torch_on_main": (("torch_on_main",), {}),
    "busy_poll_held": (("busy_poll_held",), {}),
    "before_2026_11_26": (("torch_on_main", "busy_poll_held"), {}),
    "helpers_nice_19": (("helpers_nice_19",), {}),
    "eager": ((), {"model__trace": False}),
    "omp_passive": ((), {"env:OMP_WAIT_POLICY": "PASSIVE"}),
    "thp": ((), {"env:GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}),
    "thp_no_heap_trim": ((), {"env:GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", "model__trim_headroom_mb": 0}),
    "omp_spin_10k": ((), {"env:GOMP_SPINCOUNT": "10000"}),
}


def load_encoder():  # type: ignore[no-untyped-def]
    from worker.encoder import Encoder, EncoderOptions, default_model_path
    from worker.settings import BatchSettings, ModelSettings

    batch = BatchSettings()
    encoder = Encoder(EncoderOptions(path=default_model_path(), max_length=ModelSettings().max_length))
    encoder.warm_up(batch.max_size, batch.max_tokens)
    return encoder, batch


def load_workload(events: int):  # type: ignore[no-untyped-def]
    """The warmed-up encoder, the generated events, their token ids and their real token count."""
    encoder, batch = load_encoder()
    texts = dataset.generate(events)
    token_ids = encoder.tokenize(texts.texts)
    return encoder, batch, texts, token_ids, sum(len(ids) for ids in token_ids)


# -- plans -------------------------------------------------------------------------------------


def windowed(lengths: list[int], window: int, planner: Callable[[list[int]], list[list[int]]]) -> list[list[int]]:
    """Global indices of each batch when the events are cut into windows of `window` in arrival order."""
    batches = []
    for start in range(0, len(lengths), window):
        part = lengths[start : start + window]
        batches += [[start + i for i in batch] for batch in planner(part)]  # type: ignore[arg-type]
    return batches


def greedy_cuts(lengths: list[int], policy) -> list[list[int]]:  # type: ignore[no-untyped-def]
    """Sorted, then cut whenever `max_size` or `max_tokens` would be passed: how the worker cut before."""
    from worker.batcher import cut_in_order

    return cut_in_order(sorted(range(len(lengths)), key=lengths.__getitem__), lengths, policy)  # type: ignore[arg-type]


def run_plans(args: argparse.Namespace) -> None:
    from worker.batcher import BatchPolicy, plan_batches

    encoder, batch = load_encoder()
    texts = dataset.generate(args.events)
    token_ids = encoder.tokenize(texts.texts)
    lengths = [len(ids) for ids in token_ids]
    real = sum(lengths)

    def cuts(window: int, max_tokens: int, overhead: int | None = None, greedy: bool = False,  # type: ignore[no-untyped-def]
             max_size: int | None = None):
        policy = BatchPolicy(max_size or batch.max_size, max_tokens, batch.max_wait_ms, window, overhead_default(overhead))
        if greedy:
            return windowed(lengths, window, lambda part: greedy_cuts(part, policy))
        return windowed(lengths, window, lambda part: plan_batches(part, policy, sort=True))

    def overhead_default(overhead: int | None) -> int:
        return overhead if overhead is not None else round(encoder.pass_overhead_tokens or 64)

    w, t = batch.sort_window, batch.max_tokens
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    measured = overhead_default(None)
    plans = {
        f"model alone: all sorted, batch {args.batch}": [order[i : i + args.batch] for i in range(0, len(order), args.batch)],
        f"greedy cuts (the worker before 5f2c348): window {w}, max_tokens {t}": cuts(w, t, greedy=True),
        f"worker now: least-cost cuts, window {w}, max_tokens {t}, overhead {measured}": cuts(w, t),
        f"least-cost, max_tokens {t // 2}": cuts(w, t // 2),
        f"least-cost, max_tokens {t // 4}": cuts(w, t // 4),
        f"least-cost, max_tokens {t // 4}, overhead {measured * 2}": cuts(w, t // 4, measured * 2),
        "least-cost, max_size 32": cuts(w, t, max_size=32),
        "least-cost, max_size 16": cuts(w, t, max_size=16),
        f"least-cost, max_size 16, max_tokens {t // 4}": cuts(w, t // 4, max_size=16),
    }
    seconds: dict[str, list[float]] = {name: [] for name in plans}
    monitor = machine.LoadMonitor()
    for repeat in range(args.repeats):
        for name, batches in plans.items():  # interleaved: background load hits every plan alike
            monitor.wait_quiet(timeout_s=args.quiet_wait)
            started = time.perf_counter()
            for indices in batches:
                encoder.encode([token_ids[i] for i in indices])
            seconds[name].append(time.perf_counter() - started)
            log(f"{name}: {len(lengths) / seconds[name][-1]:.1f} events/s")
    # Compute-bound work only gets slower under background load: the best run is the cleanest figure.
    top = min(seconds[next(iter(plans))])
    rows = []
    for name, batches in plans.items():
        padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
        best, median = min(seconds[name]), statistics.median(seconds[name])
        rows.append([name, f"{len(lengths) / best:.1f}", f"{top / best:.2f}", f"{len(lengths) / median:.1f}",
                     f"{padded / real:.3f}", str(len(batches)), ", ".join(f"{len(lengths) / x:.0f}" for x in seconds[name])])
    print()
    print(f"{len(lengths)} events, model time only (no Kafka), {args.repeats} interleaved repeats")
    print("\n".join(markdown_table(
        ["plan", "events/s (best)", "× model alone (best)", "events/s (median)", "padding", "passes", "runs"], rows)))


# -- workers side by side ----------------------------------------------------------------------


def start_variants(bootstrap: str, names: list[str], monitor: machine.LoadMonitor) -> dict[str, dict]:
    started = {}
    for name in names:
        patches, settings = VARIANTS[name]
        topics = fresh_topics(bootstrap, name.replace("_", "-"))
        group = f"exp-{name}-{uuid.uuid4().hex[:6]}"
        worker = WorkerProcess(bootstrap, topics, group, patches=patches, **settings)
        monitor.watch(worker.pid)
        started[name] = {"worker": worker, "topics": topics, "group": group}
    for name, item in started.items():
        item["worker"].wait_for_log("partitions assigned", timeout_s=240)
        item["sampler"] = RssSampler(item["worker"].pid)
        item["writer"] = InputWriter(bootstrap, item["topics"].input)
        item["watcher"] = CommitWatcher(bootstrap, item["group"], item["topics"].input)
        log(f"{name}: up")
    return started


@contextmanager
def watched_broker(monitor: machine.LoadMonitor) -> Iterator[str]:
    """A broker (local, or KAFKA_BOOTSTRAP_SERVERS) whose CPU the monitor counts as the benchmark's own."""
    with broker() as (bootstrap, broker_pid):
        if broker_pid:
            monitor.watch(broker_pid)
        yield bootstrap


@contextmanager
def running_variants(names: list[str], monitor: machine.LoadMonitor) -> Iterator[tuple[str, dict[str, dict]]]:
    """A broker and one started worker per variant; the workers are stopped on the way out."""
    with watched_broker(monitor) as bootstrap:
        variants = start_variants(bootstrap, names, monitor)
        try:
            yield bootstrap, variants
        finally:
            for item in variants.values():
                item["sampler"].stop()
                item["worker"].stop(timeout_s=60)


def run_workers(args: argparse.Namespace) -> None:
    encoder, batch, texts, token_ids, real = load_workload(args.events)
    names = args.variants.split(",")
    monitor = machine.LoadMonitor()
    alone: list[float] = []
    rates: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    cores: dict[str, list[float]] = {name: [] for name in names}
    paddings: dict[str, list[float]] = {name: [] for name in names}
    with running_variants(names, monitor) as (_, variants):
        time.sleep(1.0)
        idle = {name: item["sampler"].samples[-1][1] for name, item in variants.items()}
        for number in range(args.rounds):
            # Each variant right after a model-alone pass of its own (the machine's speed drifts),
            # in a rotated order so that no variant always runs first.
            shift = number % len(names)
            for name in names[shift:] + names[:shift]:
                item = variants[name]
                monitor.wait_quiet(timeout_s=args.quiet_wait)
                alone.append(ceiling.timed_pass(encoder, token_ids, args.batch).events_per_s)
                result = phases.worker_round(item["worker"], item["writer"], item["watcher"], texts.texts, real,
                                             f"r{number}", timeout_s=max(300.0, len(token_ids) / 5))
                rates[name].append(result.events_per_s)
                ratios[name].append(result.events_per_s / alone[-1])
                cores[name].append(result.cpu_seconds / result.seconds)
                if result.padding is not None:
                    paddings[name].append(result.padding)
                log(f"{name}: {result.events_per_s:.1f} events/s, model alone just before {alone[-1]:.1f}")
    top = statistics.median(alone)
    rows = [[f"model alone (sorted, batch {args.batch})", f"{top:.1f}", "", "", "", "", "", ", ".join(f"{x:.0f}" for x in alone)]]
    for name, item in variants.items():
        median = statistics.median(rates[name])
        peak = item["sampler"].peak()
        rows.append([
            name, f"{median:.1f}", f"{statistics.median(ratios[name]):.2f} ({', '.join(f'{x:.2f}' for x in ratios[name])})",
            f"{statistics.median(paddings[name]):.2f}" if paddings[name] else "n/a",
            f"{statistics.median(cores[name]):.2f}",
            f"{idle[name] / 2**20:.0f} MiB", f"{peak / 2**20:.0f} MiB ({peak / idle[name]:.2f}×)",
            ", ".join(f"{x:.0f}" for x in rates[name]),
        ])
    print()
    print(f"{len(token_ids)} events per round, {args.rounds} rounds, medians; machine: {machine.cpu_model()}")
    print("\n".join(markdown_table(["variant", "events/s", "× model alone just before (median; rounds)", "padding", "worker CPU (cores)", "idle RSS", "peak RSS", "runs"], rows)))


def run_latency(args: argparse.Namespace) -> None:
    texts = dataset.generate(args.events)
    names = args.variants.split(",")
    monitor = machine.LoadMonitor()
    rows = []
    with running_variants(names, monitor) as (bootstrap, variants):
        for name, item in variants.items():
            topics = item["topics"]
            reader = OutputReader(bootstrap, [topics.labels, topics.embeddings])
            monitor.wait_quiet(timeout_s=args.quiet_wait)
            result = phases.light_load(bootstrap, topics, reader, texts.texts, args.rate, args.seconds)
            reader.close()
            rows.append([name, f"{result.received}/{result.sent}", f"{result.percentile(0.5):.0f} ms",
                         f"{result.percentile(0.99):.0f} ms", f"{result.percentile(0.5, result.worker_ms):.0f} ms"])
            log(f"{name}: p50 {result.percentile(0.5):.0f} ms")
    print()
    print(f"light load: {args.rate:.0f} events/s for {args.seconds:.0f} s per variant")
    print("\n".join(markdown_table(["variant", "received", "p50", "p99", "worker's share p50"], rows)))


# -- CPU per thread ----------------------------------------------------------------------------


def process_counters(pid: int) -> dict[str, float]:
    """Minor page faults and user/system CPU seconds of a whole process."""
    fields = parse_stat(Path(f"/proc/{pid}/stat").read_text())[1]
    ticks = os.sysconf("SC_CLK_TCK")
    return {"minor faults": int(fields[7]), "user s": int(fields[11]) / ticks, "system s": int(fields[12]) / ticks}


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of each thread, keyed "name:tid"."""
    return {f"{thread.name}:{tid}": thread.seconds for tid, thread in read_threads(pid).items()}


def cpu_snapshot(pid: int) -> tuple[dict[str, float], dict[str, float]]:
    return process_counters(pid), thread_cpu(pid)


def cpu_row(label: str, events: int, seconds: float, before: tuple[dict, dict], after: tuple[dict, dict]) -> list[str]:
    counters = {key: after[0][key] - before[0][key] for key in after[0]}
    threads = sorted(((after[1][key] - before[1].get(key, 0.0), key) for key in after[1]), reverse=True)
    # The two busiest threads are the model's (the calling thread and its OpenMP helper on 2 cores).
    busiest, rest = sum(used for used, _ in threads[:2]), sum(used for used, _ in threads[2:])
    others: dict[str, float] = {}
    for used, key in threads[2:]:
        name = key.rsplit(":", 1)[0]
        others[name] = others.get(name, 0.0) + used
    log(f"{label}: other threads " + ", ".join(f"{name} {used:.2f}s" for name, used in
                                              sorted(others.items(), key=lambda item: -item[1]) if used > 0))
    return [label, f"{events / seconds:.1f}", f"{seconds:.1f}", f"{busiest:.1f}", f"{busiest / seconds:.2f}",
            f"{rest:.2f}", f"{counters['user s']:.1f}", f"{counters['system s']:.1f}", f"{counters['minor faults']:,.0f}"]


def run_cpu(args: argparse.Namespace) -> None:
    encoder, _, texts, token_ids, real = load_workload(args.events)
    names = args.variants.split(",")
    monitor = machine.LoadMonitor()
    rows = []
    me = os.getpid()
    with running_variants(names, monitor) as (_, variants):
        time.sleep(1.0)
        for number in range(args.rounds):
            monitor.wait_quiet(timeout_s=args.quiet_wait)
            before = cpu_snapshot(me)
            result = ceiling.timed_pass(encoder, token_ids, args.batch)
            rows.append(cpu_row(f"r{number} model alone (batch {args.batch})", len(token_ids), result.seconds,
                                before, cpu_snapshot(me)))
            for name, item in variants.items():
                pid = item["worker"].pid
                monitor.wait_quiet(timeout_s=args.quiet_wait)
                before = cpu_snapshot(pid)
                outcome = phases.worker_round(item["worker"], item["writer"], item["watcher"], texts.texts, real,
                                              f"r{number}", timeout_s=max(300.0, len(token_ids) / 5))
                rows.append(cpu_row(f"r{number} {name}", len(token_ids), outcome.seconds, before,
                                    cpu_snapshot(pid)))
                log(f"{name}: {outcome.events_per_s:.1f} events/s")
    print()
    print(f"{len(token_ids)} events per run; CPU seconds over each run; machine: {machine.cpu_model()}")
    print("\n".join(markdown_table(
        ["run", "events/s", "wall s", "2 busiest threads, CPU s", "their cores", "other threads, CPU s",
         "process user s", "process system s", "minor faults"], rows)))


# -- memory with a backlog ----------------------------------------------------------------------


def run_backlog(args: argparse.Namespace) -> None:
    texts = dataset.generate(args.events)
    names = args.variants.split(",")
    monitor = machine.LoadMonitor()
    rows = []
    with watched_broker(monitor) as bootstrap:
        topics = fresh_topics(bootstrap, "backlog")
        _, fill_seconds = phases.fill_backlog(bootstrap, topics, texts.texts, args.backlog)
        log(f"backlog: {args.backlog} events queued in {fill_seconds:.0f} s")
        for name in names:  # each in a group of its own, from the first offset
            patches, settings = VARIANTS[name]
            monitor.wait_quiet(timeout_s=args.quiet_wait)
            result = phases.backlog_memory(bootstrap, topics, args.backlog, args.backlog_seconds,
                                           watch=monitor.watch, patches=patches, **settings)
            rows.append([name, f"{result.idle_rss / 2**20:.0f} MiB", f"{result.peak_rss / 2**20:.0f} MiB",
                         f"{result.ratio:.2f}", f"{result.warmup_hwm / 2**20:.0f} MiB",
                         f"{result.processed / result.seconds:.1f}"])
            log(f"{name}: peak {result.ratio:.2f}x idle")
    print()
    print(f"backlog of {args.backlog} events, {args.backlog_seconds:.0f} s per variant; machine: {machine.cpu_model()}")
    print("\n".join(markdown_table(["variant", "idle RSS", "peak RSS", "peak / idle", "warm-up peak",
                                    "events/s (from committed offsets, coarse)"], rows)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["plans", "workers", "latency", "cpu", "backlog"])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3, help="plans: interleaved repeats")
    parser.add_argument("--rounds", type=int, default=3, help="workers, cpu: rounds")
    parser.add_argument("--batch", type=int, default=32, help="batch size of the model-alone reference")
    parser.add_argument("--variants", default="default,max_tokens_16384", help=f"of: {', '.join(VARIANTS)}")
    parser.add_argument("--rate", type=float, default=10.0, help="latency: events/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="latency: seconds per variant")
    parser.add_argument("--quiet-wait", type=float, default=20.0)
    parser.add_argument("--backlog", type=int, default=200_000, help="backlog: events queued")
    parser.add_argument("--backlog-seconds", type=float, default=75.0, help="backlog: seconds per variant")
    args = parser.parse_args(argv)
    from worker.memory import tune_allocator

    tune_allocator()  # the model alone with the worker's malloc settings, as bench/run.py runs it
    {"plans": run_plans, "workers": run_workers, "latency": run_latency, "cpu": run_cpu, "backlog": run_backlog}[args.mode](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
