"""Changes to the worker tried out by `bench/experiments.py`, applied in the worker's own process.

Nothing here is used by the benchmark itself (`bench/run.py` measures the worker as it is).
Each patch is the smallest change that shows whether an idea helps; the real change belongs in
`worker/`, with tests. (Least-cost batch cuts and first-record polling were tried here first and
are in the worker since 5f2c348; closing the window when the model is idle, and leaving glibc's mmap
threshold alone, came after. Loading the model off the main thread, waiting on the model queue
while windows are held, and heap trimming came next; `torch_on_main`, `busy_poll_held` and the
`no_heap_trim` variant's setting undo them, to compare against.)
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


PATCHES: dict[str, Callable[[], None]] = {
    "torch_on_main": torch_on_main,
    "busy_poll_held": busy_poll_held,
    "no_tune_allocator": no_tune_allocator,
    "trim_per_window": trim_per_window,
    "switch_interval_5ms": switch_interval_5ms,
    "one_arena": one_arena,
}


def apply(names: Sequence[str]) -> None:
    for name in names:
        PATCHES[name]()
