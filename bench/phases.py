"""The measurements: worker throughput rounds, light-load latency, memory under a backlog.

Every phase returns plain data; `bench.report` turns it into the table and docs/benchmarks.md.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field

import orjson

from bench.rates import Rates
from bench.topics import INPUT_PARTITIONS, CommitWatcher, InputWriter, OutputReader, TopicSet, committed
from bench.worker_process import RssSampler, WorkerProcess, vm_hwm


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- throughput --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerRound(Rates):
    events: int
    seconds: float
    real_tokens: int
    stages: dict[str, float]  # deltas of the /metrics stage totals over the round
    cpu_seconds: float  # the worker process's CPU time over the round
    broker_cpu_seconds: float = 0.0  # the local broker's, on the same cores (0 with an external one)
    bench_cpu_seconds: float = 0.0  # this process's: producing the events, watching the commits

    @property
    def padding(self) -> float | None:
        padded = self.stages.get("padded_tokens")
        return padded / self.real_tokens if padded else None


def worker_round(
    worker: WorkerProcess,
    writer: InputWriter,
    watcher: CommitWatcher,
    texts: list[str],
    real_tokens: int,
    label: str,
    timeout_s: float,
    broker_pid: int | None = None,
) -> WorkerRound:
    """Produce `texts` as fast as possible to the running (idle) worker; time until all are committed.

    The clock starts before the first event is produced and stops when the committed offsets
    reach the ends the producer's delivery reports gave, i.e. every output was delivered.
    """
    before, cpu_before = worker.stage_totals(), worker.cpu_seconds()
    broker_before, bench_before = _cpu_of(broker_pid), time.process_time()
    started = time.time()
    writer.send_all((f"{label}-{i}", text) for i, text in enumerate(texts))
    writer.flush()
    ended = watcher.wait(dict(writer.ends), timeout_s)
    if ended is None:
        raise RuntimeError(f"worker round {label}: offsets not committed within {timeout_s:.0f}s\n{worker.tail()}")
    after, cpu_after = worker.stage_totals(), worker.cpu_seconds()
    broker_cpu, bench_cpu = _cpu_of(broker_pid) - broker_before, time.process_time() - bench_before
    stages = {key: after[key] - before.get(key, 0.0) for key in after}
    return WorkerRound(len(texts), ended - started, real_tokens, stages, cpu_after - cpu_before, broker_cpu, bench_cpu)


def _cpu_of(pid: int | None) -> float:
    if pid is None:
        return 0.0
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


# -- latency at a light, fixed rate ------------------------------------------------------------


@dataclass(frozen=True)
class LatencyResult:
    rate: float
    seconds: float
    sent: int
    received: int
    latencies_ms: list[float]
    # Input timestamp -> the worker's `produced_at_ms` in the labels record: the worker's share.
    worker_ms: list[float] = field(default_factory=list)

    def percentile(self, q: float, values: list[float] | None = None) -> float:
        return percentile(self.latencies_ms if values is None else values, q)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def light_load(
    bootstrap: str, topics: TopicSet, reader: OutputReader, texts: list[str], rate: float, seconds: float
) -> LatencyResult:
    """Produce at `rate` events/s for `seconds`; latency = when the reader saw an event's last output
    minus the input record's timestamp (both on this machine's clock)."""
    # No linger: the input must reach the broker when its timestamp says it was sent.
    writer = InputWriter(bootstrap, topics.input, **{"linger.ms": 0})
    rng = random.Random(11)
    count = int(rate * seconds)
    sent_at: dict[str, float] = {}
    seen: dict[str, list[float]] = {}
    worker_ms: list[float] = []

    def produce() -> None:
        start = time.time() + 0.2
        for i in range(count):
            due = start + i / rate
            pause = due - time.time()
            if pause > 0:
                time.sleep(pause)
            event_id = f"lat-{i}"
            now = time.time()
            sent_at[event_id] = now
            writer.producer.produce(
                topics.input, orjson.dumps({"id": event_id, "text": rng.choice(texts)}),
                f"user-{i % 97}".encode(), timestamp=int(now * 1000),
            )
            writer.producer.poll(0)
        writer.producer.flush(30)

    def on_record(topic: str, value: bytes, seen_at: float) -> None:
        record = orjson.loads(value)
        event_id = record.get("id", "")
        if event_id.startswith("lat-"):
            seen.setdefault(event_id, []).append(seen_at)
            if topic == topics.labels and event_id in sent_at and "produced_at_ms" in record:
                worker_ms.append(record["produced_at_ms"] - sent_at[event_id] * 1000)

    producer = threading.Thread(target=produce, name="light-load-producer", daemon=True)
    producer.start()
    deadline = time.monotonic() + seconds + 15
    outputs = len(reader.counts)
    while time.monotonic() < deadline:
        reader.read(0.1, on_record)
        if not producer.is_alive() and sum(len(v) >= outputs for v in seen.values()) >= count:
            break
    producer.join(timeout=5)
    latencies = [
        (max(times) - sent_at[event_id]) * 1000
        for event_id, times in seen.items()
        if len(times) >= outputs and event_id in sent_at
    ]
    return LatencyResult(rate, seconds, count, len(latencies), latencies, worker_ms)


def fetch_delay(bootstrap: str, fetch_wait_ms: int, count: int = 40, rate: float = 20.0) -> float:
    """p50 ms from produce to a plain consumer seeing the record, with this `fetch.wait.max.ms`.

    Separates what the broker adds to latency (Tansu answers a fetch only when its wait is over,
    even when data arrives sooner) from what the worker adds.
    """
    from confluent_kafka import Consumer, Producer, TopicPartition

    from bench.topics import QUIET, fresh_topics
    from worker.kafka_clients import poll_ready

    topics = fresh_topics(bootstrap, "fetch-probe")
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:6]}",
                         "fetch.wait.max.ms": fetch_wait_ms, "enable.auto.commit": False, **QUIET})
    consumer.assign([TopicPartition(topics.input, p, 0) for p in range(INPUT_PARTITIONS)])
    consumer.consume(10, 1.0)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, **QUIET})
    delays: list[float] = []

    def produce() -> None:
        for i in range(count):
            producer.produce(topics.input, repr(time.time()).encode(), f"k{i}".encode())
            producer.poll(0)
            time.sleep(1 / rate)
        producer.flush(10)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    deadline = time.monotonic() + count / rate + 5
    while len(delays) < count and time.monotonic() < deadline:
        for message in poll_ready(consumer, 0.05, 1000):
            if message.error() is None:
                delays.append((time.time() - float(message.value())) * 1000)
    thread.join(5)
    consumer.close()
    return percentile(delays, 0.5)


# -- memory with a backlog ---------------------------------------------------------------------


@dataclass(frozen=True)
class BacklogResult:
    backlog: int
    idle_rss: int
    peak_rss: int
    seconds: float
    processed: int
    exit_code: int
    stop_seconds: float
    idle_samples: int
    warmup_hwm: int  # VmHWM when idle: the highest RSS so far, i.e. during the warm-up batch

    @property
    def ratio(self) -> float:
        return self.peak_rss / max(1, self.idle_rss)


def fill_backlog(bootstrap: str, topics: TopicSet, texts: list[str], count: int) -> tuple[dict[int, int], float]:
    started = time.monotonic()
    writer = InputWriter(bootstrap, topics.input, bulk=True)
    writer.send_all((f"b-{i}", texts[i % len(texts)]) for i in range(count))
    writer.flush(300)
    return dict(writer.ends), time.monotonic() - started


def backlog_memory(
    bootstrap: str, topics: TopicSet, backlog: int, seconds: float, watch=None, **settings: object  # type: ignore[no-untyped-def]
) -> BacklogResult:
    """Start a worker on a topic that already holds `backlog` events; RSS idle (warmed up, before its
    partitions are assigned) and at peak while it works through the backlog for `seconds`.
    `settings` go to `WorkerProcess` (WORKER_* settings, or "env:NAME" for a plain variable)."""
    group = f"bench-backlog-{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(bootstrap, topics, group, **settings)
    if watch is not None:
        watch(worker.pid)
    sampler = RssSampler(worker.pid)
    try:
        ready = worker.wait_for_log("worker started", timeout_s=180)
        warmup_hwm = vm_hwm(worker.pid)
        assigned = worker.wait_for_log("partitions assigned", timeout_s=60)
        idle_samples = [rss for at, rss in sampler.samples if ready <= at <= assigned]
        # Assigned at once (a fast group join): the last sample before the assignment.
        before = [rss for at, rss in sampler.samples if at <= assigned]
        # Idle is a level (the median of the samples), the peak a maximum.
        idle = int(statistics.median(idle_samples)) if idle_samples else (before[-1] if before else 0)
        time.sleep(max(0.0, assigned + seconds - time.time()))
        peak = sampler.peak(since=assigned)
        measured = time.time() - assigned
        done = committed(bootstrap, group, topics.input, range(INPUT_PARTITIONS))
        processed = sum(max(0, offset) for offset in done.values())
    except BaseException:
        sampler.stop()
        worker.kill()
        raise
    sampler.stop()
    log(f"backlog: stopping the worker ({processed} events done); it drains what it holds")
    code, stop_seconds = worker.stop(timeout_s=90)
    return BacklogResult(
        backlog=backlog,
        idle_rss=idle,
        peak_rss=peak,
        seconds=measured,
        processed=processed,
        exit_code=code,
        stop_seconds=stop_seconds,
        idle_samples=len(idle_samples),
        warmup_hwm=warmup_hwm,
    )

