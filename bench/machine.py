"""What the numbers were measured on, and how busy the machine was while they were."""

from __future__ import annotations

import datetime
import os
import platform
import time
from dataclasses import dataclass

import psutil


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def code_state(repo: str) -> str:
    """The commit the measured worker came from, and whether worker/ had uncommitted changes.

    BENCH_WORKER_CODE states it for a copy of the tree that has no .git (a machine it was copied to).
    """
    import subprocess

    stated = os.environ.get("BENCH_WORKER_CODE")
    if stated:
        return f"{stated} (stated by BENCH_WORKER_CODE; the tree ran from a copy without .git)"

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "worker")
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    if not commit:
        return "unknown (not a git checkout)"
    return f"{commit}" + (" with uncommitted changes in worker/" if dirty else " (worker/ as committed)")


def describe(device: str) -> dict[str, str]:
    import confluent_kafka
    import torch
    import transformers

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": f"{len(os.sched_getaffinity(0))} usable ({os.cpu_count()} online)",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "device": device,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


@dataclass
class LoadSample:
    at: float
    busy: float  # CPU seconds used by every process on the machine
    ours: float  # CPU seconds used by the processes of this benchmark


class LoadMonitor:
    """The share of the machine's CPUs that processes outside the benchmark used during a phase.

    The figures are only as good as the machine is quiet: this says how quiet it was.
    """

    def __init__(self) -> None:
        self.pids: set[int] = set()

    def watch(self, pid: int) -> None:
        """A child process of the benchmark (broker, worker): its CPU time is ours."""
        self.pids.add(pid)

    def sample(self) -> LoadSample:
        times = psutil.cpu_times()
        busy = times.user + times.nice + times.system + getattr(times, "irq", 0) + getattr(times, "softirq", 0)
        # This process and its children once reaped (their whole lifetime), plus the children still running.
        own = os.times()
        ours = own.user + own.system + own.children_user + own.children_system
        for pid in list(self.pids):
            try:
                t = psutil.Process(pid).cpu_times()
                ours += t.user + t.system
            except psutil.Error:
                self.pids.discard(pid)  # reaped: counted in children_* from now on
        return LoadSample(time.monotonic(), busy, ours)

    @staticmethod
    def others_share(start: LoadSample, end: LoadSample) -> float:
        """Fraction of all CPUs (0..1) busy with processes outside the benchmark."""
        elapsed = max(1e-9, end.at - start.at)
        others = max(0.0, (end.busy - start.busy) - (end.ours - start.ours))
        return min(1.0, others / (elapsed * (psutil.cpu_count() or 1)))

    def wait_quiet(self, threshold: float = 0.2, window_s: float = 2.0, timeout_s: float = 20.0) -> float:
        """Wait (at most `timeout_s`) until others use under `threshold` of the CPUs; returns seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            first = self.sample()
            time.sleep(window_s)
            if self.others_share(first, self.sample()) < threshold:
                break
        return time.monotonic() - started

