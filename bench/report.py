"""The results of one run, the targets, the printed table and docs/benchmarks.md."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from bench.baselines import LoopResult
from bench.ceiling import PassResult
from bench.machine import LoadMonitor
from bench.phases import BacklogResult, LatencyResult, WorkerRound
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


# What was measured and kept or dropped, so that nobody has to try it again. The scaffolding that
# measured these (bench/experiments.py, bench/patches.py) was removed in December 2026; its
# figures are the paired-round medians of those runs, on the same 2-core machines.
TRIED_AND_MEASURED = [
    "## Tried and measured",
    "",
    "Kept in the worker (each measured side by side with the model alone on 2 CPU cores):",
    "",
    "- Least-cost batch cuts of length-sorted windows, and taking the first fetched record at once.",
    "- A 1 ms GIL switch interval (`worker/cli.py`): 0.85× → 0.93× of the model alone.",
    "- Loading and warming the model on a short-lived thread, so the model thread owns the only OpenMP"
    " team: ~19,000 → ~5,000 context switches per 3,000 events, 1.7 → 1.9 busy cores.",
    "- glibc malloc keeping a 64 MiB top pad and a fixed 32 MiB mmap threshold (`worker/memory.py`): the"
    " worker took ~250 minor page faults per event with glibc's defaults, the model alone ~0;"
    " 0.88× → 0.93–0.97×. Heap trimming above a 64 MiB headroom keeps a backlog's RSS near 1.2× idle.",
    "- Closing the window at once when no window waits for the model (light-load latency; the next"
    " window is ready when the model finishes the one in hand, instead of being closed once it is idle:"
    " host-capacity medians ~6,100 → ~7,000 events/s over 4 paired rounds, near the machine's noise;"
    " kept because the model no longer waits for the poll thread's current chunk by design).",
    "- Each thread keeps glibc's arena of its own (`worker/memory.py`): two shared arenas made the poll"
    " thread's tokenizer and the model thread wait on each other's lock. The host-capacity worker"
    " (near-free model, 1 thread, bfloat16; paired rounds of 12,000 events) went from ~4,600 to"
    " ~6,100 events/s; a 30,000-event backlog peaked at 1.18× idle against 1.21× in float32"
    " (1.86× against 2.00× in bfloat16).",
    "- Heap trimming that pays (`worker/memory.py`): the limit rises to the RSS a trim leaves plus the"
    " headroom, and a trim whose memory comes back within its 5% share of the time doubles the wait"
    " before the next. With the near-free model a fixed share trimmed ~14 times a round and cost the"
    " model thread ~25% in page faults (~125 against ~98 µs per event with trimming off); now ~5"
    " times a round. A 30,000-event MiniLM backlog peaked as before (1.21× idle in float32, 1.99× in"
    " bfloat16). Judging a trim by how much it released did not help: the memory it releases is"
    " working set, taken back by the next passes.",
    "- Start-up objects (~400,000: torch, transformers, the model) frozen out of garbage collection"
    " after warm-up (`gc.freeze()`): 17% of the poll thread's samples were in the collector.",
    "- Batch plans solved a run of equal lengths at a time, with numpy (`worker/batcher.py`): a"
    " GPU-sized window (2,048 events, batch 256) took ~45 ms of the poll thread in pure Python, ~5–7 ms"
    " with one numpy reduction per entry, now ~2.5–3 ms; the cuts are the same.",
    "- The host path per window: intake hands a polled chunk's entries and lengths to"
    " `Batcher.add_all`, which cuts it into windows by slices; the publisher renders a window into one"
    " list; no exemplar filter on the metrics (an OpenTelemetry histogram record cost 5.1 µs with the"
    " default filter, 3.3 without, and `end_to_end.latency` is recorded for every event). The CPU per"
    " event under the interpreter lock, one thread, a model that does nothing (the measurement that"
    " became `bench/host_path.py`), 2 paired runs: ~21 → ~19 µs at embedding width 32, ~30 → ~22 at"
    " 384.",
    "- Deliveries counted per window rather than per output: the publisher's CPU per event is within"
    " noise either way (~22–32 µs, mostly rendering JSON), kept because the offset tracker is then told"
    " once per window.",
    "- Back-pressure that holds windows instead of pausing (`worker/pausing.py`): librdkafka drops a"
    " paused partition's prefetched records and fetches them again, and the host-capacity worker"
    " fetched 133,500 records for 60,000 consumed; holding, it fetched 60,000. Host-capacity medians"
    " over 12 paired rounds in alternating order: 0.62 against 0.60 (an earlier 9, the new code always"
    " second: 0.56 against 0.62), within this machine's noise; kept for the broker's sake.",
    "- Tokenizing a long text from a prefix cut at a space (`worker/tokenization.py`): 2,000 documents"
    " of 5,000–30,000 characters took 265–269 µs each instead of 2,205–2,370; the benchmark's events"
    " (posts of at most 500 words) as before.",
    "- Plain ASCII texts skip BERT's normalizer (`worker/tokenization.py`): its accent stripping and"
    " text cleaning change nothing there, and only its lowercasing is kept. The worker's tokenizer on"
    " the benchmark's 30,000 texts (94% ASCII), one thread, 7 alternating runs: 49.5 against 64.8 µs"
    " of CPU per event (0.71×); the poll thread's CPU per event in host-capacity rounds 70.5–78.2"
    " against 83.2–90.3.",
    "- `fetch.queue.backoff.ms` 50 instead of librdkafka's 1,000 (`worker/kafka_clients.py`): with the"
    " prefetch bounded at 16 MB, a worker that drained it waited out the backoff. A backlog of 20,000"
    " records of 4 KB (short texts, near-free model): 10,985, 10,833 and 10,054 events/s against"
    " 14,032, 11,458 and 14,292 in paired runs.",
    "",
    "Tried and left out (no gain beyond the noise of paired rounds, medians of 5–6 rounds, the default"
    " at 0.89× each time): helper threads at nice 19 (0.88–0.90×); GOMP_SPINCOUNT=10000 (0.90×);"
    " a 0.2 ms switch interval (0.89×); OMP_WAIT_POLICY=PASSIVE (0.83×, worse); ACTIVE (an idle"
    " worker spins its cores); a heap-trimming limit above the warm-up peak (0.88×, RSS 1.57×); no"
    " heap trimming (0.92×, RSS 2.02×); malloc_trim from another thread during a pass (lower peak,"
    " 1.19×, more faults); copying a window's outputs into anonymous mmaps (the heap grew as fast);"
    " glibc arenas per thread or one arena without trimming (peaks 1.61–1.91×); mimalloc through"
    " LD_PRELOAD (0.88×); a trimming headroom of 128 or 192 MiB (within the noise); max_tokens 2048"
    " (0.87×); producer linger 50 ms (0.87×); transparent huge pages (fewer faults, no measurable"
    " speed-up). On the host path (near-free model): turning the garbage collector off beyond"
    " freezing start-up objects (within the noise); shape buckets for bfloat16 (rows to multiples"
    " of 8, lengths of 16, so that oneDNN reuses the kernels it builds per batch shape, ~2 ms"
    " each): passes over new shapes 6,200 → 8,100 events/s but repeated shapes 7,700 → 8,300 and"
    " float32 12,400 → 9,200, so the benchmark's near-free model runs in float32 instead. Timing"
    " warm-up's per-token cost on 32-token texts instead of at max_length (where attention makes a"
    " near-free model's tokens look dear): its pass overhead read 179 tokens instead of 56 and passes"
    " held ~63 events instead of ~37, but paired quick rounds gave 0.72 and 0.54 against 0.67 and"
    " 0.61 (no gain beyond the noise), and on a GPU a short reference batch would leave the device"
    " idle and make passes look cheap. The poll thread at nice 5 or 10, so that the model thread gets"
    " the core first: host-capacity medians 0.62 and 0.59 against 0.68 in one set of runs, 0.51 and"
    " 0.65 against 0.62 in another (with other load). No heap trimming with the near-free model:"
    " medians over 9 paired rounds 0.67 against 0.65, within the noise, while a MiniLM backlog peaks"
    " at 2.98× idle without it. Every pass at `max_size` (`pass_overhead_tokens` 100,000): 0.42–0.47"
    " against 0.59–0.69 by default over 3 paired sets of 2 rounds (the near-free model is slower per"
    " event in passes of 256 than of 32–64). Taking one record a turn as soon as the model's queue is"
    " full, so that one window fewer waits in the worker and a burst's last second, when only the"
    " model works, is shorter: medians 0.62 against 0.61 over 6 paired rounds, and with `queue_depth`"
    " 1 windows would alternate between full and nearly empty. Padding a batch with numpy masks"
    " instead of a row at a time: 1.3–1.4 against 1.6–1.7 µs per row, too little to change it."
    " The model thread pinned to one core and the worker's other threads to the other, so that the"
    " model's caches are not shared: 0.55, 0.65, 0.57, 0.72 against 0.58, 0.62, 0.69, 0.64 over 2"
    " paired sets of 2 rounds. A tokenizer running on the other core does not slow the model alone"
    " (122 against 125 µs of CPU per event alone, medians of 4). Heap trimming whose 5% share also"
    " counts the page faults that bring back what a trim released (~2.5 µs per 4 KiB page): with the"
    " near-free model, 12 ms trims released ~130 MiB that the passes faulted back within 0.3 s, just"
    " past the 0.24 s share, so each seemed to hold and they came every 0.3 s (the model thread took"
    " 13 faults and 32 µs of system time per event, against 1 and 5 with trimming off). Counting all"
    " that a trim released: host-capacity rounds 0.61, 0.55, 0.69, 0.59, 0.73, 0.77 against 0.61,"
    " 0.61, 0.61, 0.56, 0.62, 0.61 (3 paired sets of 2), but the MiniLM backlog peaked at 2.48× idle"
    " (1498 / 605 MiB) against 2.07–2.23× before; counting only the faults the model thread took"
    " after a trim, up to what it released: 2.57× (1554 / 605 MiB). The trims a MiniLM backlog needs"
    " also release memory that comes back, so a share that counts its faults trims less and the"
    " peak, which pods' memory limits are sized by, rises.",
    "",
]


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
        "`make bench` (or `.venv/bin/python bench/run.py`).",
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
        *TRIED_AND_MEASURED,
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
