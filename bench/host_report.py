"""The host-capacity benchmark's results: rates, the ratio to the slowest part, CPU per event by
thread, and its section of docs/benchmarks.md (between markers, replaced in place). Pure."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from bench.report import markdown_table, run_lines
from bench.sections import HOST_CAPACITY

# The worker with the near-free model against the slowest of its parts alone, same events, same run.
TARGET = 0.65

PASS_THROUGH = "Kafka pass-through"
TOKENIZER = "tokenizer"
MODEL = "tiny model"


@dataclass(frozen=True)
class HostRound:
    events: int
    parts: dict[str, float]  # events/s of each part alone
    worker_seconds: float  # first event produced -> last output seen
    worker_cpu: dict[str, float]  # the worker's CPU seconds by thread role over its run
    broker_cpu: float = 0.0  # the local broker's CPU seconds over the worker's run (same cores)
    bench_cpu: float = 0.0  # this process's: producing the events, reading the outputs
    others_share: float = 0.0  # share of the CPUs other processes used during the round
    # Forward passes over the round, the worker's (from its /metrics) and the model alone's:
    # {"passes", "events", "padded_tokens", "model_s"}; empty when not measured.
    worker_passes: dict[str, float] = field(default_factory=dict)
    alone_passes: dict[str, float] = field(default_factory=dict)

    @property
    def worker_rate(self) -> float:
        return self.events / self.worker_seconds

    def slowest_part(self) -> tuple[str, float]:
        return slowest(self.parts)

    @property
    def ratio(self) -> float:
        """The worker over the slowest of its parts alone in this round."""
        return self.worker_rate / self.slowest_part()[1]


def slowest(parts: dict[str, float]) -> tuple[str, float]:
    name = min(parts, key=parts.__getitem__)
    return name, parts[name]


def median_ratio(rounds: list[HostRound]) -> float:
    """The headline: the median of the rounds' ratios (each paired with the parts of its own round)."""
    return statistics.median(r.ratio for r in rounds)


def target_met(ratio: float, target: float = TARGET) -> bool:
    return ratio >= target


def exit_code(ratio: float, check: bool) -> int:
    """1 only when asked to check and the target is missed: today's worker is known to miss it."""
    return 1 if check and not target_met(ratio) else 0


def median_rates(rounds: list[HostRound]) -> dict[str, float]:
    return {name: statistics.median(r.parts[name] for r in rounds) for name in rounds[0].parts}


def cpu_per_event(rounds: list[HostRound]) -> dict[str, float]:
    """Median µs of CPU per event for each thread role (0 in a round where it did not run), busiest first.

    Threads that used no CPU over the runs (the HTTP server, the model loader that ended) are left out.
    """
    roles = {role for r in rounds for role in r.worker_cpu}
    medians = {role: statistics.median(r.worker_cpu.get(role, 0.0) * 1e6 / r.events for r in rounds) for role in roles}
    busy = {role: us for role, us in medians.items() if us >= 0.05}
    return dict(sorted(busy.items(), key=lambda item: (-item[1], item[0])))


@dataclass
class HostRun:
    command: str
    quick: bool
    machine: dict[str, str]
    settings: dict[str, object]
    dataset: dict[str, float]
    rounds: list[HostRound] = field(default_factory=list)
    host_path: Any = None  # bench.host_path.HostPath, when measured

    def verdict(self) -> str:
        return "**pass**" if target_met(median_ratio(self.rounds)) else "**FAIL**"


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)


def rate_rows(run: HostRun) -> list[list[str]]:
    rates = median_rates(run.rounds)
    rows = [[f"{name} alone", f"{rate:,.0f}", f"{1e6 / rate:.1f}", _runs([r.parts[name] for r in run.rounds])]
            for name, rate in rates.items()]
    worker = statistics.median(r.worker_rate for r in run.rounds)
    rows.append(["**the worker**, end to end", f"**{worker:,.0f}**", f"{1e6 / worker:.1f}",
                 _runs([r.worker_rate for r in run.rounds])])
    return rows


def cpu_rows(run: HostRun) -> list[list[str]]:
    per_event = cpu_per_event(run.rounds)
    total = sum(per_event.values())
    wall = statistics.median(r.worker_seconds * 1e6 / r.events for r in run.rounds)
    rows = [[f"`{role}`" if role[0].islower() and " " not in role else role, f"{us:.1f}", f"{us / total:.0%}"]
            for role, us in per_event.items()]
    rows.append(["**all worker threads**", f"**{total:.1f}**", "100%"])
    rows.append(["wall time per event (first produced → last output)", f"{wall:.1f}", ""])
    broker = statistics.median(r.broker_cpu * 1e6 / r.events for r in run.rounds)
    bench = statistics.median(r.bench_cpu * 1e6 / r.events for r in run.rounds)
    rows.append(["_beside it: the local broker (same cores)_", f"{broker:.1f}", ""])
    rows.append(["_beside it: the benchmark (producing, reading outputs)_", f"{bench:.1f}", ""])
    return rows


PASS_COLUMNS = ["forward passes", "events per pass", "padded tokens per event", "wall time in `Encoder.encode`, µs per event"]


def pass_rows(run: HostRun) -> list[list[str]]:
    """Medians over the rounds of the worker's passes and the model alone's (the same `Encoder.encode`)."""
    rows = []
    for name, key in (("the worker's", "worker_passes"), ("the model alone's", "alone_passes")):
        measured = [getattr(r, key) for r in run.rounds if getattr(r, key).get("passes")]
        if not measured:
            continue

        def median(figure, measured=measured):  # type: ignore[no-untyped-def]
            return statistics.median(figure(p) for p in measured)

        rows.append([
            name,
            f"{median(lambda p: p['events'] / p['passes']):.0f}",
            f"{median(lambda p: p['padded_tokens'] / p['events']):.1f}",
            f"{median(lambda p: p['model_s'] * 1e6 / p['events']):.1f}",
        ])
    return rows


def render_section(run: HostRun) -> str:
    s = run.settings
    ratios = [r.ratio for r in run.rounds]
    ratio = median_ratio(run.rounds)
    slow_names = sorted({r.slowest_part()[0] for r in run.rounds})
    out = [
        "## Host capacity: the worker with a near-free model",
        "",
        "Written by `bench/host_capacity.py` (`make bench`, or `make bench-host` for a quick run); rerun it, "
        "do not edit by hand. How much Python work the worker adds per event, with a model so small that "
        "its forward passes cost next to nothing: the worker against each of its parts alone on the same "
        "events, in interleaved rounds on the same machine.",
        "",
    ]
    if run.quick:
        out += ["> **Quick run** (`--quick`): small sizes, for development only.", ""]
    out += [
        *run_lines(run.command, run.machine, s["broker"], s["model"], s),
        f"- Events: {int(run.dataset['events']):,} per round from `bench/dataset.py` (words: median "
        f"{run.dataset['words_median']:.0f}, mean {run.dataset['words_mean']}; tokens: mean "
        f"{run.dataset['tokens_mean']}), {len(run.rounds)} round{'s' if len(run.rounds) != 1 else ''}",
        "",
        "| part | events/s (median) | µs per event | runs (events/s) |",
        "| --- | --- | --- | --- |",
        *["| " + " | ".join(row) + " |" for row in rate_rows(run)],
        "",
        f"- {PASS_THROUGH} alone: a plain confluent-kafka loop in the benchmark's process over the same events "
        "(already queued): consume, produce the input value to both output topics, commit (asynchronously per "
        "chunk of 500, then synchronously after the final flush), with the worker's producer settings.",
        f"- {TOKENIZER.capitalize()} alone: the worker's `Encoder.tokenize` over the texts in chunks of 500 (as "
        "the poll loop takes them).",
        f"- {MODEL.capitalize()} alone: the worker's `Encoder.encode` over the pre-tokenized events sorted by "
        f"length, batch {s['model_batch']}.",
        "- The worker: a real `python -m worker run` process, ready and owning its partitions before the "
        "round's events are produced at once; timed from the first event produced to the last of both outputs "
        "(labels and embeddings) of every event seen by a consumer.",
        "",
        f"**The worker over the slowest part alone** ({', '.join(slow_names)}), per round: "
        f"{', '.join(f'{x:.2f}' for x in ratios)}; median **{ratio:.2f}×** against the target of ≥ {TARGET:.2f}×: "
        f"{run.verdict()}.",
        "",
        "### The worker's CPU time per event, by thread",
        "",
        "From `/proc/PID/task/*/stat` (user + system time) before and after each worker run; medians over "
        "the rounds. Thread names: `model` (forward passes; torch's OpenMP helpers it starts carry its "
        "name), `publish` (serialising and producing outputs), the main thread runs the poll loop "
        "(consuming, decoding, tokenizing, batching, committing), librdkafka's own threads are `rdk:*`; "
        "threads that used no CPU are left out.",
        "",
    ]
    out += markdown_table(["thread", "CPU µs per event", "share of the worker's CPU"], cpu_rows(run))
    passes = pass_rows(run)
    if passes:
        out += [
            "",
            "Forward passes (medians over the rounds; the worker's from its `batch.size`, `batch.tokens` and "
            "`model.duration` metrics). Time in `Encoder.encode` is wall time: the worker's includes the time "
            "its model thread waited for a core (so it can exceed that thread's CPU time above), the model "
            "alone had the machine to itself. The worker's passes are cut from what has arrived; the model "
            "alone sorts the whole set.",
            "",
        ]
        out += markdown_table(PASS_COLUMNS, passes)
    if run.host_path is not None:
        out += ["", *host_path_lines(run.host_path)]
    out += [
        "",
        "Other processes' share of the CPUs during each round: "
        + ", ".join(f"{r.others_share:.0%}" for r in run.rounds) + ".",
    ]
    return HOST_CAPACITY.wrap("\n".join(out))


# The stages of bench/host_path.py, as the report names them.
HOST_PATH_STAGES = {
    "intake": "intake: decoding, validating, offset tracking (`Intake.accept` less the tokenizer)",
    "tokenizer": "the tokenizer (Rust, outside the interpreter lock; its output lists inside it)",
    "batcher": "the batcher: windows and their passes (`Batcher.add_all`)",
    "model stage": "the model stage around a model that does nothing (`InferenceStage.score`)",
    "publish": "publishing: rendering, producing, delivery reports, metrics",
}


def host_path_lines(path: Any) -> list[str]:
    """The host path's stages, µs of CPU per event at each embedding width, and one interpreter's ceiling."""
    widths = list(path.widths)
    rows = [[label, *(f"{path.stage_us(width)[stage]:.1f}" for width in widths)]
            for stage, label in HOST_PATH_STAGES.items()]
    rows.append(["**under the interpreter lock** (all but the tokenizer)",
                 *(f"**{path.locked_us(width):.1f}**" for width in widths)])
    rows.append(["one interpreter's ceiling, events/s (1 / the above)", *(f"{path.ceiling(width):,.0f}" for width in widths)])
    return [
        "### The host path's CPU per event, stage by stage",
        "",
        f"`bench/host_path.py`: the worker's stages driven in turn on one thread over the same {path.events:,} "
        "records consumed from the broker, with a model that does no work, the worker's metrics set-up and "
        "`gc.freeze()` as the worker has them; CPU time of that thread (`time.thread_time`), medians of "
        f"{len(path.repetitions)} run{'s' if len(path.repetitions) != 1 else ''}. Embeddings are rendered as JSON "
        "at the widths of the models a user would run. What runs under the interpreter lock bounds one worker "
        "process whatever its device: in front of a GPU, its sum is the host's cost of an event.",
        "",
        *markdown_table(["stage", *(f"µs per event, width {width} ({name})" for width, name in path.widths.items())],
                        rows),
    ]


def console_summary(run: HostRun) -> str:
    lines = [f"{row[0].replace('**', ''):32} {row[1].replace('**', ''):>10} events/s   {row[2]:>7} µs/event"
             for row in rate_rows(run)]
    ratio = median_ratio(run.rounds)
    lines.append(f"worker / slowest part alone: {', '.join(f'{r.ratio:.2f}' for r in run.rounds)} "
                 f"(median {ratio:.2f}; target >= {TARGET:.2f}: {run.verdict().replace('**', '')})")
    lines.append("worker CPU µs per event by thread: "
                 + ", ".join(f"{role} {us:.1f}" for role, us in cpu_per_event(run.rounds).items()))
    for row in pass_rows(run):
        lines.append(f"{row[0]} passes: {row[1]} events per pass, {row[2]} padded tokens per event, "
                     f"{row[3]} µs per event of wall time in Encoder.encode")
    return "\n".join(lines)
