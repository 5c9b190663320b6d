"""The real worker, `python -m worker run`, in a subprocess: settings by WORKER_* variables.

Its JSON log lines say when it is warmed up and when it got its partitions; its `/metrics`
endpoint says how long the model, the tokenizer and the publisher took; psutil samples its RSS.
"""

from __future__ import annotations

import calendar
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import psutil

from bench.topics import FAST_GROUP, TopicSet
from worker.local_broker import free_port

REPO = Path(__file__).resolve().parents[1]

# The stage totals read from /metrics: histogram name prefix -> short name.
STAGE_HISTOGRAMS = {
    "encoder_worker_model_duration": "model_s",
    "encoder_worker_tokenize_duration": "tokenize_s",
    "encoder_worker_publish_duration": "publish_s",
    "encoder_worker_batch_tokens": "padded_tokens",
    "encoder_worker_batch_size": "batched_events",
}


def _log_time(ts: str) -> float:
    """'2026-11-26T05:53:44.123Z' -> seconds since the epoch."""
    whole, _, rest = ts.partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + int(rest.rstrip("Z") or 0) / 1000


@dataclass
class RssSampler:
    """Samples a process's RSS every `interval_s` on a thread: (time.time(), bytes)."""

    pid: int
    interval_s: float = 0.1
    samples: list[tuple[float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        process = psutil.Process(self.pid)
        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), process.memory_info().rss))
            except psutil.Error:
                return
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, since: float = 0.0, until: float = float("inf")) -> int:
        return max((rss for at, rss in self.samples if since <= at <= until), default=0)


def vm_hwm(pid: int) -> int:
    """The process's peak RSS so far (bytes), from /proc; 0 where there is no /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class WorkerProcess:
    """`python -m worker run`, the worker as a user runs it."""

    def __init__(self, bootstrap: str, topics: TopicSet, group: str, **settings: object) -> None:
        self.metrics_port = free_port()
        env = {key: value for key, value in os.environ.items() if not key.startswith("WORKER_")}
        # The benchmark turns the tokenizer's threads off for itself; the worker decides for itself
        # (off on a CPU, where they would fight torch; on with a GPU). "env:" settings still set it.
        env.pop("TOKENIZERS_PARALLELISM", None)
        env.update(
            {
                "WORKER_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
                "WORKER_KAFKA__GROUP_ID": group,
                "WORKER_KAFKA__CONSUMER_CONFIG": orjson.dumps(FAST_GROUP).decode(),
                "WORKER_TOPICS__INPUT": topics.input,
                "WORKER_TOPICS__LABELS": topics.labels,
                "WORKER_TOPICS__EMBEDDINGS": topics.embeddings,
                "WORKER_TOPICS__DEAD_LETTER": topics.dead_letter,
                "WORKER_HTTP__PORT": str(self.metrics_port),
                "WORKER_HTTP__HOST": "127.0.0.1",
                "WORKER_LOG__FORMAT": "json",
                "HF_HUB_OFFLINE": "1",
            }
        )
        for key, value in settings.items():
            if key.startswith("env:"):
                env[key.removeprefix("env:")] = str(value)
                continue
            env["WORKER_" + key.upper()] = orjson.dumps(value).decode() if isinstance(value, (dict, list)) else str(value)
        self.env = {key: value for key, value in env.items() if key.startswith("WORKER_")}
        self.log_path = Path(tempfile.mkstemp(prefix="bench-worker-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        self.started_at = time.time()
        self.process = subprocess.Popen([sys.executable, "-m", "worker", "run"], env=env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.process.pid

    # -- logs ------------------------------------------------------------------------------------

    def log_events(self) -> list[dict]:
        events = []
        for line in self.log_path.read_bytes().splitlines():
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                events.append(entry)
        return events

    def logged_at(self, message: str) -> float | None:
        """When the first log line with this message was written (seconds since the epoch)."""
        for entry in self.log_events():
            if entry.get("message") == message and "ts" in entry:
                return _log_time(entry["ts"])
        return None

    def wait_for_log(self, message: str, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            at = self.logged_at(message)
            if at is not None:
                return at
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited ({self.process.returncode}):\n{self.tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"worker did not log {message!r} within {timeout_s:.0f}s:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    # -- metrics ---------------------------------------------------------------------------------

    def stage_totals(self) -> dict[str, float]:
        """Sums of the stage histograms on /metrics (empty when the endpoint is not there)."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return {}
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for prefix, short in STAGE_HISTOGRAMS.items():
                if family.name.startswith(prefix):
                    for sample in family.samples:
                        if sample.name.endswith("_sum"):
                            totals[short] = totals.get(short, 0.0) + sample.value
                        elif sample.name.endswith("_count"):
                            totals[short + "_count"] = totals.get(short + "_count", 0.0) + sample.value
        return totals

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.pid).cpu_times()
        return times.user + times.system

    # -- lifecycle -------------------------------------------------------------------------------

    def stop(self, timeout_s: float = 60.0) -> tuple[int, float]:
        """SIGTERM, wait; returns (exit code, seconds it took to stop). Killed after the timeout."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._log.close()
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()
