"""Host capacity: the worker with a near-free model next to each of its parts alone, same events.

    .venv/bin/python bench/host_capacity.py                  # 30,000 events x 5 rounds; writes docs/benchmarks.md
    .venv/bin/python bench/host_capacity.py --quick          # ~8,000 events x 2 rounds; no file unless --out
    .venv/bin/python bench/host_capacity.py --events 20000 --rounds 3 --out /tmp/host.md --check

With a model of 2 layers, 32 wide (random weights, the MiniLM tokenizer) and GPU-like batch
settings, the forward passes cost next to nothing, so what is left is the worker's own work per
event: what bounds it on a GPU, where the model is fast. Each round measures, on the same events:
a plain confluent-kafka pass-through loop, the tokenizer alone, the tiny model alone, then the
worker (a real process) end to end, and the worker's CPU time per event by thread. Prints the
figures and writes its section of docs/benchmarks.md (between markers; the rest stays). With
--check, exits 1 when the worker is under 0.65x the slowest part alone.
"""

from __future__ import annotations

import argparse
import gc
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

import orjson  # noqa: E402

from bench import ceiling, dataset, host_path, host_report, machine, report, thread_cpu  # noqa: E402
from bench.host_report import MODEL, PASS_THROUGH, TOKENIZER, HostRound, HostRun  # noqa: E402
from bench.phases import log  # noqa: E402
from bench.sections import HOST_CAPACITY  # noqa: E402
from bench.tiny_model import near_free_model  # noqa: E402
from bench.topics import INPUT_PARTITIONS, QUIET, InputWriter, OutputReader, TopicSet, broker, fresh_topics  # noqa: E402
from bench.worker_process import WorkerProcess  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"
# Batch settings of a GPU deployment (helm's ci/gpu-values.yaml): large windows and passes.
GPU_LIKE_BATCH = {"max_size": 256, "max_tokens": 65536, "sort_window": 2048, "queue_depth": 2}
CHUNK = 500  # records the worker's poll loop takes at a time (worker.runner.POLL_CHUNK)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, help="events per round (default 30000; --quick 8000)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of the parts alone and the worker (default 5; --quick 2)")
    parser.add_argument("--quick", action="store_true", help="small sizes for development; no file unless --out")
    parser.add_argument("--out", type=Path, help=f"report whose host-capacity section to write (default {DEFAULT_OUT.name})")
    parser.add_argument("--check", action="store_true", help=f"exit 1 when the worker is under {host_report.TARGET}x the slowest part")
    parser.add_argument("--model-threads", type=int, default=1,
                        help="torch threads of the model, in the worker and alone (default 1: a GPU's model thread "
                             "is one thread of host work; 0: the worker's CPU default, every usable core, where the "
                             "model alone takes all the cores the worker's other stages need)")
    parser.add_argument("--model-dtype", default="float32",
                        help="the near-free model's WORKER_MODEL__DTYPE, in the worker and alone (default float32; "
                             "auto picks bfloat16 on CPUs with native support, where oneDNN builds kernels for "
                             "each new batch shape, ~2 ms each: a cost of the CPU model, not of the host path)")
    parser.add_argument("--host-path-runs", type=int,
                        help="runs of the stage-by-stage host path (bench/host_path.py) after the rounds "
                             "(default 3; --quick 1; 0 leaves it out)")
    parser.add_argument("--quiet-wait", type=float, default=20.0,
                        help="before each round, wait up to this many seconds for other load to drop (default 20)")
    args = parser.parse_args(argv)
    args.events = args.events or (8000 if args.quick else 30_000)
    args.rounds = args.rounds or (2 if args.quick else 5)
    if args.host_path_runs is None:
        args.host_path_runs = 1 if args.quick else 3
    if args.out is None and not args.quick:
        args.out = DEFAULT_OUT
    return args


# -- the parts alone -----------------------------------------------------------------------------


def kafka_pass_through(bootstrap: str, topics: TopicSet, events: int, timeout_s: float) -> float:
    """events/s of a plain loop: consume, produce the value to both output topics, commit.

    Commits don't wait for deliveries (the loop tracks nothing): Kafka's cost, not a worker's.
    Timed from the first record received to the final flush and commit.
    """
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

    from worker.kafka_clients import PRODUCER_DEFAULTS, poll_ready

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"host-pass-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 50,
                         "queued.max.messages.kbytes": 16384, **QUIET})
    consumer.assign([TopicPartition(topics.input, p, 0) for p in range(INPUT_PARTITIONS)])
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_DEFAULTS, **QUIET})
    # A new idempotent producer's first flush waits for its connections, metadata and producer id
    # (~1 s on Tansu): the worker's producer is long-lived, so that wait is taken before the clock starts.
    for topic in (topics.labels, topics.embeddings):
        producer.produce(topic, b"{}", b"warm-up")
    if producer.flush(30):
        raise RuntimeError("pass-through: the producer could not deliver its warm-up records")
    done, started = 0, None
    deadline = time.monotonic() + timeout_s
    try:
        while done < events and time.monotonic() < deadline:
            messages = [m for m in poll_ready(consumer, 0.5, CHUNK) if m.error() is None]
            if not messages:
                continue
            started = started or time.perf_counter()
            for message in messages:
                for topic in (topics.labels, topics.embeddings):
                    while True:
                        try:
                            producer.produce(topic, message.value(), message.key())
                            break
                        except BufferError:
                            producer.poll(0.01)
            producer.poll(0)
            consumer.commit(asynchronous=True)
            done += len(messages)
        if producer.flush(60) or done < events:
            raise RuntimeError(f"pass-through: {done}/{events} events consumed, outputs left undelivered or late")
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:  # nothing consumed since the last async commit
                raise
        return done / (time.perf_counter() - started)  # type: ignore[operator]
    finally:
        consumer.close()


def tokenizer_alone(encoder, texts: list[str]) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    for start in range(0, len(texts), CHUNK):
        encoder.tokenize(texts[start : start + CHUNK])
    return len(texts) / (time.perf_counter() - started)


# -- the worker ----------------------------------------------------------------------------------


def wait_for_outputs(reader: OutputReader, label: str, events: int, timeout_s: float) -> float:
    """When (time.time()) the last of both outputs of the round's `events` events was seen.

    Records are kept raw with the time they were seen and parsed only once a topic holds enough of
    them: the reader shares the worker's cores, and parsing each record as it came cost the round
    about 5 µs per event.
    """
    prefix = label + "-"
    raw: dict[str, list[tuple[bytes, float]]] = {topic: [] for topic in reader.counts}
    parsed = {topic: 0 for topic in reader.counts}  # records of raw[topic] already looked at
    seen: dict[str, set[str]] = {topic: set() for topic in reader.counts}
    last = 0.0

    def on_record(topic: str, value: bytes, seen_at: float) -> None:
        raw[topic].append((value, seen_at))

    def take_in(topic: str) -> None:
        nonlocal last
        for value, seen_at in raw[topic][parsed[topic]:]:
            event_id = orjson.loads(value).get("id", "")
            if event_id.startswith(prefix) and event_id not in seen[topic]:
                seen[topic].add(event_id)
                last = max(last, seen_at)
        parsed[topic] = len(raw[topic])

    deadline = time.monotonic() + timeout_s
    while True:
        for topic, records in raw.items():
            if len(records) >= events and len(seen[topic]) < events:
                take_in(topic)  # enough records: parse them (records of earlier rounds or repeats may be among them)
        if all(len(ids) >= events for ids in seen.values()):
            return last
        if time.monotonic() > deadline:
            for topic in raw:
                take_in(topic)
            raise RuntimeError(f"round {label}: outputs seen {[len(ids) for ids in seen.values()]} of {events} each")
        reader.read(0.05, on_record)


def worker_round(worker: WorkerProcess, writer: InputWriter, reader: OutputReader, texts: list[str], label: str,
                 broker_pid: int | None, timeout_s: float) -> tuple[float, dict[str, float], float, float]:
    """(seconds, worker CPU seconds by thread role, broker CPU seconds, this process's CPU seconds)."""
    threads_before, broker_before = thread_cpu.read_threads(worker.pid), _cpu_of(broker_pid)
    bench_before = time.process_time()
    started = time.time()
    writer.send_all((f"{label}-{i}", text) for i, text in enumerate(texts))
    writer.flush()
    ended = wait_for_outputs(reader, label, len(texts), timeout_s)
    by_role = thread_cpu.seconds_by_role(worker.pid, threads_before, thread_cpu.read_threads(worker.pid))
    return ended - started, by_role, _cpu_of(broker_pid) - broker_before, time.process_time() - bench_before


def pass_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The worker's forward passes between two reads of its /metrics."""
    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    return {"passes": delta("batched_events_count"), "events": delta("batched_events"),
            "padded_tokens": delta("padded_tokens"), "model_s": delta("model_s")}


def _cpu_of(pid: int | None) -> float:
    if pid is None:
        return 0.0
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


# -- the run -------------------------------------------------------------------------------------


def measure_rounds(bootstrap: str, broker_pid: int | None, model_dir: Path, encoder, texts: list[str],  # type: ignore[no-untyped-def]
                   token_ids: list[list[int]], args: argparse.Namespace, monitor: machine.LoadMonitor,
                   ) -> tuple[list[HostRound], host_path.HostPath | None]:
    """Rounds of [each part alone, then the worker], on one broker, one worker process started once;
    then the host path stage by stage, once the worker has stopped."""
    timeout = max(300.0, len(texts) / 50)
    background: list[tuple[str, float, float, float]] = []
    parts_topics = fresh_topics(bootstrap, "host-parts")
    filler = InputWriter(bootstrap, parts_topics.input, bulk=True)
    filler.send_all((f"p-{i}", text) for i, text in enumerate(texts))
    filler.flush()
    worker_topics = fresh_topics(bootstrap, "host-worker")
    threads = {"model__num_threads": args.model_threads} if args.model_threads else {}
    worker = WorkerProcess(bootstrap, worker_topics, f"host-worker-{uuid.uuid4().hex[:6]}",
                           model__path=str(model_dir), model__dtype=args.model_dtype, **threads,
                           **{f"batch__{k}": v for k, v in GPU_LIKE_BATCH.items()})
    monitor.watch(worker.pid)
    rounds: list[HostRound] = []
    try:
        worker.wait_for_log("worker started", timeout_s=180)
        worker.wait_for_log("partitions assigned", timeout_s=60)
        log(f"worker up and assigned (pid {worker.pid})")
        writer = InputWriter(bootstrap, worker_topics.input)
        reader = OutputReader(bootstrap, [worker_topics.labels, worker_topics.embeddings])
        try:
            for number in range(args.rounds):
                with report.Phase(f"round {number + 1}", monitor, background, args.quiet_wait) as timed:
                    alone = ceiling.timed_pass(encoder, token_ids, GPU_LIKE_BATCH["max_size"])
                    parts = {
                        PASS_THROUGH: kafka_pass_through(bootstrap, parts_topics, len(texts), timeout),
                        TOKENIZER: tokenizer_alone(encoder, texts),
                        MODEL: alone.events_per_s,
                    }
                    before = worker.stage_totals()
                    log("alone: " + ", ".join(f"{name} {rate:,.0f}/s" for name, rate in parts.items()))
                    seconds, cpu, broker_cpu, bench_cpu = worker_round(
                        worker, writer, reader, texts, f"r{number}", broker_pid, timeout)
                result = HostRound(len(texts), parts, seconds, cpu, broker_cpu, bench_cpu, timed.share,
                                   worker_passes=pass_figures(before, worker.stage_totals()),
                                   alone_passes={"passes": -(-alone.events // alone.batch_size), "events": alone.events,
                                                 "padded_tokens": alone.padded_tokens, "model_s": alone.seconds})
                rounds.append(result)
                log(f"worker: {result.worker_rate:,.0f} events/s ({seconds:.1f} s), {result.ratio:.2f}x the slowest "
                    f"part alone; others used {timed.share:.0%} of the CPUs")
        finally:
            reader.close()
    finally:
        worker.stop(timeout_s=60)
    if not args.host_path_runs:
        return rounds, None
    path = host_path.measure(bootstrap, parts_topics, len(texts), encoder, GPU_LIKE_BATCH, CHUNK, args.host_path_runs)
    log("host path, µs of CPU per event under the interpreter lock: "
        + ", ".join(f"{name} {path.locked_us(width):.1f}" for width, name in host_path.WIDTHS.items()))
    return rounds, path


# -- the command -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python bench/host_capacity.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    import torch

    from worker.cli import encoder_options
    from worker.encoder import Encoder
    from worker.memory import tune_allocator
    from worker.settings import ModelSettings

    tune_allocator()  # the parts alone get the worker's malloc settings, as the worker does
    model_dir = near_free_model()
    # The options the worker builds from the same settings.
    encoder = Encoder(encoder_options(ModelSettings(path=model_dir, num_threads=args.model_threads,
                                                    dtype=args.model_dtype)))
    encoder.warm_up(GPU_LIKE_BATCH["max_size"], GPU_LIKE_BATCH["max_tokens"])
    texts = dataset.generate(args.events)
    token_ids = encoder.tokenize(texts.texts)
    log(f"data set: {texts.describe()}; model {model_dir}")
    run = HostRun(
        command=command.strip(), quick=args.quick,
        machine=machine.describe(str(encoder.device)) | {"code": machine.code_state(str(REPO))},
        settings={"model": "near-free BERT (2 layers, hidden 32, random weights, MiniLM tokenizer; "
                           "`bench/tiny_model.py`), max_length " + str(encoder.options.max_length)
                           + f", {str(encoder.dtype).removeprefix('torch.')} (`WORKER_MODEL__DTYPE={args.model_dtype}`)"
                           + f", torch threads {torch.get_num_threads()}"
                           + (f" (`WORKER_MODEL__NUM_THREADS={args.model_threads}`)" if args.model_threads else ""),
                  "model_batch": GPU_LIKE_BATCH["max_size"],
                  **{f"batch.{k}": v for k, v in GPU_LIKE_BATCH.items()}},
        dataset=texts.describe() | {"tokens_mean": round(sum(map(len, token_ids)) / len(token_ids), 1)},
    )
    monitor = machine.LoadMonitor()
    with broker() as (bootstrap, broker_pid):
        if broker_pid:
            monitor.watch(broker_pid)
        run.settings["broker"] = "local Tansu 0.6.0 (in memory)" if broker_pid else f"external {bootstrap}"
        run.rounds, run.host_path = measure_rounds(bootstrap, broker_pid, model_dir, encoder, texts.texts, token_ids,
                                                   args, monitor)
        gc.collect()  # the Kafka clients go before the broker does, without reconnect noise

    print()
    print(host_report.console_summary(run))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        old = args.out.read_text() if args.out.exists() else ""
        args.out.write_text(HOST_CAPACITY.splice(old, host_report.render_section(run)))
        log(f"wrote the host-capacity section of {args.out}")
    return host_report.exit_code(host_report.median_ratio(run.rounds), args.check)


if __name__ == "__main__":
    sys.exit(main())
