"""Changes to the worker tried out by `bench/experiments.py`, applied in the worker's own process.

Nothing here is used by the benchmark itself (`bench/run.py` measures the worker as it is).
Each patch is the smallest change that shows whether an idea helps; the real change belongs in
`worker/`, with tests. (Least-cost batch cuts and first-record polling were tried here first and
are in the worker since 5f2c348; closing the window when the model is idle, and leaving glibc's mmap
threshold alone, came after. Loading the model off the main thread, waiting on the model queue
while windows are held, and heap trimming came next; `torch_on_main`, `busy_poll_held` and the
`no_heap_trim` variant's setting undo them, to compare against.)

Tried on 2026-11-27 and left out of the worker: no gain beyond the noise of paired rounds on 2
cores (medians of 5-6 rounds, the default at 0.89 each time): `helpers_nice_19` 0.88-0.90;
`omp_spin_10k` 0.90; `switch_interval_200us` 0.89; `omp_passive` 0.83 (worse). A heap-trimming
limit above the warm-up's peak RSS instead of the idle RSS gave 0.88 and let the RSS reach 1.57x
idle; `no_heap_trim` gave 0.92 at 2.02x.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"  # Debian's libjemalloc2


def no_tune_allocator() -> None:
    """Leave glibc's malloc at its defaults (worker.memory limits it to 2 arenas)."""
    import worker.memory

    worker.memory.tune_allocator = lambda *args, **kwargs: False  # type: ignore[assignment]


def trim_per_window() -> None:
    """malloc_trim after each window the model scores (the worker trims only above a headroom)."""
    import worker.inference
    from worker.memory import release_free_heap

    original = worker.inference.InferenceStage.score

    @functools.wraps(original)
    def score(self, window):  # type: ignore[no-untyped-def]
        try:
            return original(self, window)
        finally:
            release_free_heap()

    worker.inference.InferenceStage.score = score  # type: ignore[method-assign]


def switch_interval_5ms() -> None:
    """Python's default GIL switch interval (5 ms) instead of the worker's 1 ms."""
    import worker.cli

    worker.cli.GIL_SWITCH_INTERVAL_S = 0.005


def switch_interval_200us() -> None:
    """A GIL switch interval of 0.2 ms instead of the worker's 1 ms."""
    import worker.cli

    worker.cli.GIL_SWITCH_INTERVAL_S = 0.0002


def one_arena() -> None:
    """One glibc arena shared by all threads instead of two."""
    import worker.memory

    worker.memory.tune_allocator = functools.partial(worker.memory.tune_allocator, arena_max=1)


def torch_on_main() -> None:
    """Load and warm up the encoder on the calling thread, as before 2026-11-26 (not on a short-lived one)."""
    import worker.encoder

    worker.encoder.on_short_lived_thread = lambda work: work()  # type: ignore[assignment]


def busy_poll_held() -> None:
    """While closed windows wait for the model, poll every 5 ms instead of waiting on the model queue."""
    import queue as queue_module

    import worker.runner

    Worker = worker.runner.Worker
    original_timeout = Worker._poll_timeout

    def _release_held(self):  # type: ignore[no-untyped-def]
        while self.held:
            try:
                self.model_queue.put_nowait(self.held[0])
            except queue_module.Full:
                return
            self.held.popleft()
        if self.paused:
            self.consumer.resume(self.consumer.assignment())
            self.paused = False
            self.metrics.set_gauge("partitions.paused", 0)

    def _poll_timeout(self):  # type: ignore[no-untyped-def]
        return worker.runner.BUSY_POLL_TIMEOUT_S if self.held else original_timeout(self)

    Worker._release_held = _release_held  # type: ignore[method-assign]
    Worker._poll_timeout = _poll_timeout  # type: ignore[method-assign]


def helpers_nice_19() -> None:
    """Nice 19 for every thread but the model thread's (set once partitions are assigned).

    The poll, publisher, HTTP and librdkafka threads then lose to the model's OpenMP team when
    they contend for a core; threads started later inherit it from their creator, and the team
    (started by the model thread on its first pass) from the model thread.
    """
    import os
    import threading

    import worker.inference
    import worker.runner

    model_tid: list[int] = []
    original_run = worker.inference.InferenceStage.run

    def run(self):  # type: ignore[no-untyped-def]
        model_tid.append(threading.get_native_id())
        return original_run(self)

    original_assign = worker.runner.Worker._on_assign

    def _on_assign(self, consumer, partitions):  # type: ignore[no-untyped-def]
        for tid in map(int, os.listdir("/proc/self/task")):
            if tid not in model_tid:
                os.setpriority(os.PRIO_PROCESS, tid, 19)
        return original_assign(self, consumer, partitions)

    worker.inference.InferenceStage.run = run  # type: ignore[method-assign]
    worker.runner.Worker._on_assign = _on_assign  # type: ignore[method-assign]


def log_model_waits() -> None:
    """Print each window's arrival at the model: how long the model had waited, and its size."""
    import sys
    import time

    import worker.inference

    original = worker.inference.InferenceStage.score
    last_end = [0.0]

    def score(self, window):  # type: ignore[no-untyped-def]
        started = time.monotonic()
        try:
            return original(self, window)
        finally:
            ended = time.monotonic()
            print(f"MODELWAIT t={started:.3f} wait={started - last_end[0]:.3f} busy={ended - started:.3f} "
                  f"events={len(window.entries)} passes={len(window.batches)}", file=sys.stderr, flush=True)
            last_end[0] = ended

    worker.inference.InferenceStage.score = score  # type: ignore[method-assign]


PATCHES: dict[str, Callable[[], None]] = {
    "helpers_nice_19": helpers_nice_19,
    "log_model_waits": log_model_waits,
    "torch_on_main": torch_on_main,
    "busy_poll_held": busy_poll_held,
    "no_tune_allocator": no_tune_allocator,
    "trim_per_window": trim_per_window,
    "switch_interval_5ms": switch_interval_5ms,
    "switch_interval_200us": switch_interval_200us,
    "one_arena": one_arena,
}


def apply(names: Sequence[str]) -> None:
    for name in names:
        PATCHES[name]()
