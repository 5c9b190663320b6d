"""The results of one run, the targets, the printed table and docs/benchmarks.md."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from bench.baselines import LoopResult
from bench.ceiling import PassResult
from bench.machine import LoadMonitor
from bench.phases import BacklogResult, LatencyResult, WorkerRound
from bench.sections import TRIED_AND_MEASURED
from worker.precision import MIN_COSINE, ProbeCheck

MIB = 2**20
# A round during which processes outside the benchmark used more than this share of the CPUs is
# run again and left out of the medians.
NOISY_SHARE = 0.15


@dataclass
class Results:
    command: str
    quick: bool
    machine: dict[str, str]
    dataset: dict[str, float]
    settings: dict[str, object]
    sweep: dict[int, float] = field(default_factory=dict)
    ceiling: list[PassResult] = field(default_factory=list)  # the model alone at the worker's precision
    # The model alone in float32, right after each `ceiling` pass; empty where the worker runs float32.
    ceiling_float32: list[PassResult] = field(default_factory=list)
    sweep_float32: dict[int, float] = field(default_factory=dict)
    precision_check: ProbeCheck | None = None  # the worker's precision against float32, whole set
    worker: list[WorkerRound] = field(default_factory=list)
    baselines: list[LoopResult] = field(default_factory=list)
    outputs_checked: dict[str, int] = field(default_factory=dict)
    light_batch_rows: int = 1
    light_batch_seconds: float = 0.0
    latency: LatencyResult | None = None
    worker_exit: tuple[int, float] | None = None
    backlog: BacklogResult | None = None
    # The same backlog with the worker's heap trimming off (UNTRIMMED): what the trimming saves.
    backlog_untrimmed: BacklogResult | None = None
    backlog_fill_seconds: float = 0.0
    # (phase, seconds, others' CPU share, seconds waited for a quieter machine first)
    background: list[tuple[str, float, float, float]] = field(default_factory=list)
    worker_env: dict[str, str] = field(default_factory=dict)
    ceiling_share: list[float] = field(default_factory=list)  # others' CPU share during each pass
    worker_share: list[float] = field(default_factory=list)
    repeated: set[int] = field(default_factory=set)  # worker rounds run again, left out of the medians
    rounds_rss: tuple[int, int] | None = None  # (RSS when assigned, peak) over the throughput rounds
    fetch_delay: tuple[int, float] | None = None  # (fetch.wait.max.ms, p50 ms) of a plain consumer

    # -- derived -------------------------------------------------------------------------------

    @property
    def gpu(self) -> bool:
        return self.machine.get("device", "cpu").startswith("cuda")

    def kept_rounds(self) -> list[int]:
        return [i for i in range(len(self.worker)) if i not in self.repeated]

    def ceiling_rate(self) -> float:
        """Median of the model-alone passes next to the kept worker rounds."""
        passes = sorted({p for i in self.kept_rounds() for p in (i, i + 1) if p < len(self.ceiling)})
        return statistics.median(self.ceiling[p].events_per_s for p in passes or range(len(self.ceiling)))

    def worker_rate(self) -> float:
        return statistics.median(self.worker[i].events_per_s for i in self.kept_rounds())

    def baseline(self, prefix: str) -> LoopResult | None:
        return next((b for b in self.baselines if b.name.startswith(prefix)), None)

    @property
    def precision(self) -> str:
        return str(self.settings.get("precision", "float32"))

    def float32_passes(self) -> list[PassResult]:
        """The float32 model alone: its own passes, or the model alone where the worker runs float32."""
        return self.ceiling_float32 or self.ceiling

    def float32_rate(self) -> float:
        passes = self.float32_passes()
        kept = sorted({p for i in self.kept_rounds() for p in (i, i + 1) if p < len(passes)})
        return statistics.median(passes[p].events_per_s for p in kept or range(len(passes)))

    def paired_ratios(self, passes: list[PassResult] | None = None) -> list[float]:
        """Each worker round over the mean of the model-alone passes just before and after it."""
        passes = self.ceiling if passes is None else passes
        ratios = []
        for number, round_ in enumerate(self.worker):
            around = passes[number : number + 2]
            ratios.append(round_.events_per_s / statistics.fmean(p.events_per_s for p in around))
        return ratios

    def worker_ratio(self, passes: list[PassResult] | None = None) -> float:
        """The median of the kept rounds' paired ratios (against the model alone at the worker's precision)."""
        paired = self.paired_ratios(passes)
        return statistics.median(paired[i] for i in self.kept_rounds())

    def float32_ratio(self) -> float:
        """The headline ratio: against the float32 model alone, paired round by round."""
        return self.worker_ratio(self.float32_passes())

    def float32_goal(self) -> float:
        """1.6x where the worker runs bfloat16 on a CPU that computes it natively, 0.9x elsewhere."""
        native = self.precision == "bfloat16" and self.settings.get("native_bfloat16")
        return 1.6 if native else 0.9

    def max_wait_ms(self) -> int:
        return int(self.settings["batch.max_wait_ms"])  # type: ignore[arg-type]


class Phase:
    """`with Phase(...)`: waits (briefly) for a quiet machine, then records how long the phase took
    and how busy the rest of the machine was meanwhile."""

    def __init__(
        self, name: str, monitor: LoadMonitor, sink: list[tuple[str, float, float, float]], quiet_s: float
    ) -> None:
        self.name, self.monitor, self.sink, self.quiet_s = name, monitor, sink, quiet_s

    def __enter__(self) -> Phase:
        self.waited = self.monitor.wait_quiet(timeout_s=self.quiet_s) if self.quiet_s > 0 else 0.0
        self.start = self.monitor.sample()
        self.share = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        end = self.monitor.sample()
        self.share = LoadMonitor.others_share(self.start, end)
        self.sink.append((self.name, end.at - self.start.at, self.share, self.waited))


@dataclass(frozen=True)
class Target:
    name: str
    goal: str
    measured: str
    passed: bool | None  # None: reported, not checked (e.g. on a GPU)

    @property
    def verdict(self) -> str:
        return {True: "**pass**", False: "**FAIL**", None: "reported"}[self.passed]


# The comparison backlog run: the worker without its heap trimming (WorkerProcess settings).
UNTRIMMED = {"model__trim_headroom_mb": 0}
UNTRIMMED_TEXT = " ".join(f"WORKER_{name.upper()}={value}" for name, value in UNTRIMMED.items())


def targets(results: Results) -> list[Target]:
    found: list[Target] = []
    check_cpu = not results.gpu
    if results.worker and results.ceiling:
        ratio, goal = results.float32_ratio(), results.float32_goal()
        where = f"CPU with native bfloat16: {results.settings['native_bfloat16']}" if goal > 1 else "CPU"
        found.append(Target("End to end vs the float32 model alone (median of paired rounds)",
                            f"≥ {goal:.2f}× ({where})", f"{ratio:.2f}×", ratio >= goal if check_cpu else None))
        if results.ceiling_float32:
            like = results.worker_ratio()
            found.append(Target(f"End to end vs the model alone in {results.precision} (median of paired rounds)",
                                "reported (like for like)", f"{like:.2f}×", None))
        naive, chunk = results.baseline("naive"), results.baseline("fixed")
        if naive:
            over = results.worker_rate() / naive.events_per_s
            found.append(Target("vs the naive worker", "≥ 1.6× (CPU)", f"{over:.2f}×", over >= 1.6 if check_cpu else None))
        if chunk:
            over = results.worker_rate() / chunk.events_per_s
            found.append(Target("vs the fixed-chunk worker", "≥ 3× (CPU)", f"{over:.2f}×", over >= 3 if check_cpu else None))
    check = results.precision_check
    if check is not None:
        found.append(Target(f"{results.precision} embeddings vs float32, every event of the set",
                            f"cosine ≥ {MIN_COSINE}", f"min {check.min_cosine:.5f}; top label changed on "
                            f"{check.labels_differ} of {check.texts}", check.min_cosine >= MIN_COSINE))
    if results.latency is not None and results.latency.latencies_ms:
        bound = results.max_wait_ms() + results.light_batch_seconds * 1000
        p50 = results.latency.percentile(0.5)
        found.append(Target(
            "Light-load p50 latency", f"≤ max_wait_ms + one batch = {results.max_wait_ms()} + "
            f"{results.light_batch_seconds * 1000:.0f} = {bound:.0f} ms", f"{p50:.0f} ms", p50 <= bound))
    if results.backlog is not None:
        b = results.backlog
        found.append(Target(f"Peak RSS with {b.backlog:,} events queued", "≤ 1.5× idle RSS after warm-up",
                            f"{b.ratio:.2f}× ({b.peak_rss / MIB:.0f} / {b.idle_rss / MIB:.0f} MiB)", b.ratio <= 1.5))
    return found


# -- rendering ---------------------------------------------------------------------------------


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def throughput_rows(results: Results) -> list[list[str]]:
    top, float32 = results.ceiling_rate(), results.float32_rate()
    rows = []
    c = results.ceiling
    rows.append([
        f"model alone, {results.precision} (sorted, batch {c[0].batch_size})", f"{top:.1f}",
        f"{statistics.median(p.tokens_per_s for p in c):.0f}", "1.00", f"{top / float32:.2f}", f"{c[0].padding:.2f}",
        _runs([p.events_per_s for p in c]),
    ])
    f = results.ceiling_float32
    if f:
        rows.append([
            f"model alone, float32 (sorted, batch {f[0].batch_size})", f"{float32:.1f}",
            f"{statistics.median(p.tokens_per_s for p in f):.0f}", f"{float32 / top:.2f}", "1.00",
            f"{f[0].padding:.2f}", _runs([p.events_per_s for p in f]),
        ])
    for b in results.baselines:
        rows.append([b.name, f"{b.events_per_s:.1f}", f"{b.tokens_per_s:.0f}", f"{b.events_per_s / top:.2f}",
                     f"{b.events_per_s / float32:.2f}", f"{b.padding:.2f}", _runs([b.events_per_s])])
    w = results.worker
    paddings = [r.padding for r in w if r.padding is not None]
    kept = [w[i] for i in results.kept_rounds()]
    runs = ", ".join(f"{r.events_per_s:.1f}" + (" (repeated)" if i in results.repeated else "") for i, r in enumerate(w))
    rows.append([
        "**this worker**, end to end", f"**{results.worker_rate():.1f}**",
        f"{statistics.median(r.tokens_per_s for r in kept):.0f}", f"**{results.worker_rate() / top:.2f}**",
        f"**{results.worker_rate() / float32:.2f}**", f"{statistics.median(paddings):.2f}" if paddings else "n/a", runs,
    ])
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def where_time_goes(results: Results) -> list[str]:
    """The worker's stage totals (from its /metrics) over the throughput rounds."""
    w = [results.worker[i] for i in results.kept_rounds()]
    if not w or not w[0].stages:
        return ["The worker's `/metrics` endpoint was not reachable; no stage totals."]
    wall = sum(r.seconds for r in w)
    model = sum(r.stages.get("model_s", 0.0) for r in w)
    tokenize = sum(r.stages.get("tokenize_s", 0.0) for r in w)
    publish = sum(r.stages.get("publish_s", 0.0) for r in w)
    cpu = sum(r.cpu_seconds for r in w)
    broker_cpu = sum(r.broker_cpu_seconds for r in w)
    bench_cpu = sum(r.bench_cpu_seconds for r in w)
    batches = sum(r.stages.get("model_s_count", 0.0) for r in w)
    events = sum(r.events for r in w)
    alone = sum(r.events for r in w) / results.ceiling_rate()
    rows = [
        ["wall time, first event produced → last offset committed", f"{wall:.1f} s", "100%"],
        ["model thread in forward passes (`model.duration`)", f"{model:.1f} s", f"{model / wall:.0%}"],
        ["  the same events through the model alone (sorted, best batch)", f"{alone:.1f} s", f"{alone / wall:.0%}"],
        ["model thread idle (waiting for a window, pipeline fill and drain)", f"{wall - model:.1f} s",
         f"{(wall - model) / wall:.0%}"],
        ["poll thread tokenizing (`tokenize.duration`)", f"{tokenize:.1f} s", f"{tokenize / wall:.0%}"],
        ["publisher serialising and producing (`publish.duration`)", f"{publish:.1f} s", f"{publish / wall:.0%}"],
        ["worker process CPU time (all threads)", f"{cpu:.1f} s", f"{cpu / wall:.2f} cores"],
        ["broker CPU time (same cores; absent with a remote cluster)", f"{broker_cpu:.1f} s",
         f"{broker_cpu / wall:.2f} cores"],
        ["benchmark process CPU time (producing, watching commits)", f"{bench_cpu:.1f} s",
         f"{bench_cpu / wall:.2f} cores"],
    ]
    lines = [f"Totals over the {len(w)} kept rounds, from the worker's `/metrics` and the processes' CPU times.", ""]
    lines += markdown_table(["", "seconds", "share of wall"], rows)
    if batches:
        padded = sum(r.stages.get("padded_tokens", 0.0) for r in w)
        real = sum(r.real_tokens for r in w)
        top = results.ceiling[0]
        lines += [
            "",
            f"{int(batches)} forward passes, {events / batches:.1f} events each on average. Reading: the model "
            f"thread was idle {(wall - model) / wall:.0%} of the time (pipeline fill, drain, waiting); its forward "
            f"passes took {model / alone:.2f}× as long as the model alone needs for the same events, with padding "
            f"{padded / real:.2f} against {top.padding:.2f} for the model alone (batch {top.batch_size}, all "
            f"events sorted together).",
        ]
    return lines


# "Tried and measured" is prose kept by hand in docs/benchmarks.md (bench/run.py carries it over); a
# report written elsewhere (the GPU runs) points there.
TRIED_PLACEHOLDER = TRIED_AND_MEASURED.wrap(
    "## Tried and measured\n\n"
    "What was tried to make the worker faster, what was kept and what was left out, with the measurements: "
    "[docs/benchmarks.md](benchmarks.md#tried-and-measured), kept by hand."
)


def run_lines(command: str, machine: dict, broker: str, model: str, settings: dict) -> list[str]:
    """The bullet lines that say how, where and on what a report's run was made (both reports)."""
    m = machine
    return [
        f"- Command: `{command}`",
        f"- Date: {m['date']}",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}" + (f", GPU {m['gpu']}" if "gpu" in m else ""),
        f"- Software: Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, "
        f"librdkafka {m['librdkafka']}; device `{m['device']}`",
        f"- Worker code: {m.get('code', 'unknown')}",
        f"- Broker: {broker}",
        f"- Model: {model}; worker batch settings "
        + ", ".join(f"`{k.removeprefix('batch.')}={v}`" for k, v in settings.items() if k.startswith("batch.")),
    ]


def render(results: Results) -> str:
    out = [
        "# Benchmarks",
        "",
        "Written by `bench/run.py` from the run described below; do not edit by hand — rerun with "
        "`make bench` (or `.venv/bin/python bench/run.py`). The exception is \"Tried and measured\", kept "
        "by hand between its markers: a run keeps it as it finds it.",
        "",
    ]
    if results.quick:
        out += ["> **Quick run** (`--quick`): small sizes, for development only; not the full benchmark.", ""]
    out += [
        *run_lines(results.command, results.machine, results.settings["broker"],
                   f"`{results.settings['model']}`, max_length {results.settings['max_length']}", results.settings),
        "",
        "## Data set",
        "",
        f"{int(results.dataset['events']):,} generated events (fixed seed, `bench/dataset.py`): chat lines to "
        f"multi-paragraph posts. Words: median {results.dataset['words_median']:.0f}, mean "
        f"{results.dataset['words_mean']}, p90 {results.dataset['words_p90']}, p99 {results.dataset['words_p99']}, "
        f"max {results.dataset['words_max']}. Tokens (truncated at {results.dataset['truncated_at']}): "
        f"median {results.dataset['tokens_median']}, mean {results.dataset['tokens_mean']}.",
        "",
        "## Throughput",
        "",
        "Same events, same model, same `max_length`, one after another on this machine. The model alone "
        "and this worker ran side by side in rounds (medians shown; every run listed); the naive and "
        "fixed-chunk workers ran between the rounds."
        + (" The model alone and the two simple workers ran with the worker's malloc settings "
           "(`worker.memory.tune_allocator`), as the worker does." if results.settings.get("allocator_tuned") else ""),
        "",
    ]
    out += markdown_table(["approach", "events/s", "tokens/s", "× model alone", "× float32 model alone",
                           "padding (padded / real tokens)", "runs (events/s)"], throughput_rows(results))

    def per_round(paired: list[float]) -> str:
        return ", ".join(f"{r:.2f}" + (" (repeated)" if i in results.repeated else "") for i, r in enumerate(paired))

    out += [
        "",
        f"- Precision: the worker and the model alone ran in {results.precision} "
        f"({results.settings.get('precision_reason', 'float32')})."
        + (" The float32 model alone ran right after each model-alone pass, with its own best batch size: "
           "\"× model alone\" compares like with like, \"× float32 model alone\" shows what the precision gains."
           if results.ceiling_float32 else ""),
        f"- This worker over the mean of the float32 model-alone passes just before and after it, per round: "
        f"{per_round(results.paired_ratios(results.float32_passes()))} (median of the kept rounds "
        f"{results.float32_ratio():.2f}: the figure the target uses)"
        + (f"; over the {results.precision} model alone: {per_round(results.paired_ratios())} (median "
           f"{results.worker_ratio():.2f})" if results.ceiling_float32 else "")
        + f". A round is repeated, and left out, when other processes used over {NOISY_SHARE:.0%} of the CPUs "
        f"during it or the model-alone passes before it.",
    ]
    if results.precision_check is not None:
        out.append(f"- {results.precision} against float32, every event of the set through the model alone: "
                   f"{results.precision_check.describe('events')}.")
    subset = [b for b in results.baselines if b.events < int(results.dataset["events"])]
    if subset:
        out.append(f"- The naive and fixed-chunk workers took the first {subset[0].events:,} events of the set "
                   f"(`--baseline-events`), not all {int(results.dataset['events']):,}: their rates are per event "
                   f"of the same mix.")
    out += [
        "- Model alone, events/s by batch size on a length-stratified sample: "
        + ", ".join(f"{k}: {v:.0f}" for k, v in results.sweep.items())
        + ("; in float32: " + ", ".join(f"{k}: {v:.0f}" for k, v in results.sweep_float32.items())
           if results.sweep_float32 else "") + ".",
        "- Worker runs are timed from the first event produced to the moment the group's committed offsets "
        "reach the last input offsets (so every output was delivered); outputs checked afterwards: "
        + ", ".join(f"{n:,} on `{t.split('.')[-1]}`" for t, n in results.outputs_checked.items()) + "."
        + (f" After the light-load run it stopped on SIGTERM with exit code {results.worker_exit[0]} in "
           f"{results.worker_exit[1]:.1f} s." if results.worker_exit else ""),
        "",
        "### Where the worker's time goes",
        "",
    ]
    out += where_time_goes(results)
    out += ["", "## Latency at light load", ""]
    lat = results.latency
    if lat is not None:
        out += [
            f"{lat.sent} events at {lat.rate:.0f} events/s for {lat.seconds:.0f} s to the idle worker; latency is "
            f"the time a consumer saw the event's last output minus the input record's timestamp.",
            "",
        ]
        out += markdown_table(["received", "p50", "p90", "p99", "max", "worker's share p50", "max_wait_ms",
                       f"one batch of {results.light_batch_rows} (median)"], [[
            f"{lat.received}/{lat.sent}", f"{lat.percentile(0.5):.0f} ms", f"{lat.percentile(0.9):.0f} ms",
            f"{lat.percentile(0.99):.0f} ms", f"{max(lat.latencies_ms, default=float('nan')):.0f} ms",
            f"{lat.percentile(0.5, lat.worker_ms):.0f} ms", f"{results.max_wait_ms()} ms",
            f"{results.light_batch_seconds * 1000:.0f} ms"]])
        out += [
            "",
            "- The worker's share: input timestamp to the `produced_at_ms` the worker wrote into the labels "
            "record, so it includes the time the input spent in the broker before the worker's fetch returned.",
        ]
        if results.fetch_delay is not None:
            wait, delay = results.fetch_delay
            out.append(
                f"- The broker's share: a plain consumer with the worker's `fetch.wait.max.ms={wait}` saw records "
                f"{delay:.0f} ms (p50) after they were produced, at the same rate, with no model at all."
            )
    b = results.backlog
    if b is not None:
        out += [
            "",
            "## Memory with a backlog",
            "",
            f"{b.backlog:,} events queued before a fresh worker started (queued in {results.backlog_fill_seconds:.0f} s). "
            f"Idle RSS: after warm-up, before its partitions were assigned ({b.idle_samples} samples). "
            f"Peak RSS: sampled every 100 ms while it worked the backlog for {b.seconds:.0f} s.",
            "",
        ]
        def memory_row(name: str, r: BacklogResult) -> list[str]:
            return [name, f"{r.idle_rss / MIB:.0f} MiB", f"{r.peak_rss / MIB:.0f} MiB", f"{r.ratio:.2f}",
                    f"{r.warmup_hwm / MIB:.0f} MiB", f"{r.processed:,}", f"{r.processed / r.seconds:.1f}",
                    str(r.exit_code), f"{r.stop_seconds:.1f} s"]

        rows = [memory_row("default", b)]
        if results.backlog_untrimmed is not None:
            rows.append(memory_row(f"`{UNTRIMMED_TEXT}`", results.backlog_untrimmed))
        out += markdown_table(["worker", "idle RSS", "peak RSS", "peak / idle", "highest RSS during warm-up", "events done",
                       "events/s", "exit code after SIGTERM", "stop took"], rows)
        out += ["", "- Highest RSS during warm-up: the process's high-water mark (VmHWM) when it was idle, i.e. "
                "what the warm-up batch (the largest the batch settings allow) needed before its memory was freed."]
        if results.backlog_untrimmed is not None:
            out.append(
                f"- `{UNTRIMMED_TEXT}` switches off the worker's heap trimming. Batches of varying shapes "
                "fragment glibc's heap, and the freed activation buffers of past passes stay resident; by "
                "default the model thread hands them back (malloc_trim) whenever the RSS is more than "
                f"`model.trim_headroom_mb` ({results.settings['trim_headroom_mb']} MiB) above its level after warm-up."
            )
        if results.rounds_rss is not None:
            idle, peak = results.rounds_rss
            out.append(f"- Without a backlog, the throughput worker's RSS went from {idle / MIB:.0f} MiB (idle) to "
                       f"{peak / MIB:.0f} MiB at peak ({peak / max(1, idle):.2f}×) over its rounds.")
    out += ["", "## Targets", ""]
    out += markdown_table(["target", "goal", "measured", "result"],
                  [[t.name, t.goal, t.measured, t.verdict] for t in targets(results)])
    out += [
        "",
        "## How busy the machine was",
        "",
        "Share of all CPUs used by processes outside the benchmark (other users' builds and tests) during "
        "each phase; figures from a phase with a high share are less trustworthy. Before each phase the "
        "benchmark waits (up to a limit) for that share to fall under 20%.",
        "",
    ]
    out += markdown_table(["phase", "seconds", "others' CPU share", "waited first"],
                  [[name, f"{seconds:.0f}", f"{share:.0%}", f"{waited:.0f} s"]
                   for name, seconds, share, waited in results.background])
    out += [
        "",
        "## Worker settings used",
        "",
        "Everything else is the worker's default.",
        "",
        "```",
        *[f"{k}={v}" for k, v in sorted(results.worker_env.items()) if "TOPICS" not in k and "GROUP" not in k],
        "```",
        "",
        TRIED_PLACEHOLDER,
    ]
    return "\n".join(out)


def console_table(results: Results) -> str:
    header = ["approach", "events/s", "tokens/s", "x alone", "x fp32 alone", "padding", "runs"]
    rows = [[cell.replace("**", "") for cell in row] for row in throughput_rows(results)]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]
    lat = results.latency
    if lat is not None:
        lines.append(f"light load {lat.rate:.0f}/s: p50 {lat.percentile(0.5):.0f} ms, p99 {lat.percentile(0.99):.0f} ms")
    if results.backlog is not None:
        b = results.backlog
        lines.append(f"backlog {b.backlog:,}: idle RSS {b.idle_rss / MIB:.0f} MiB, peak {b.peak_rss / MIB:.0f} MiB "
                     f"({b.ratio:.2f}x)")
    if results.backlog_untrimmed is not None:
        b = results.backlog_untrimmed
        lines.append(f"backlog with {UNTRIMMED_TEXT}: idle RSS {b.idle_rss / MIB:.0f} MiB, "
                     f"peak {b.peak_rss / MIB:.0f} MiB ({b.ratio:.2f}x), {b.processed / b.seconds:.1f} events/s")
    lines.append("")
    for t in targets(results):
        lines.append(f"{t.verdict.replace('**', ''):8} {t.name}: {t.measured} (goal {t.goal})")
    return "\n".join(lines)
