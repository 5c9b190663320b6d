"""Changes to the worker tried out by `bench/experiments.py`, applied in the worker's own process.

Nothing here is used by the benchmark itself (`bench/run.py` measures the worker as it is).
Each patch is the smallest change that shows whether an idea helps; the real change belongs in
`worker/`, with tests. (Least-cost batch cuts and first-record polling were tried here first and
are in the worker since 5f2c348; closing the window when the model is idle, and leaving glibc's mmap
threshold alone, came after.)
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
    """Return the heap's free pages to the system (malloc_trim) after each window the model scores."""
    import ctypes

    import worker.inference

    libc = ctypes.CDLL("libc.so.6")
    original = worker.inference.InferenceStage.score

    def score(self, window):  # type: ignore[no-untyped-def]
        try:
            return original(self, window)
        finally:
            libc.malloc_trim(0)

    worker.inference.InferenceStage.score = score  # type: ignore[method-assign]


def switch_interval_5ms() -> None:
    """Python's default GIL switch interval (5 ms) instead of the worker's 1 ms."""
    import worker.cli

    worker.cli.GIL_SWITCH_INTERVAL_S = 0.005


def one_arena() -> None:
    """One glibc arena shared by all threads instead of two."""
    import worker.memory

    worker.memory.tune_allocator = functools.partial(worker.memory.tune_allocator, arena_max=1)


PATCHES: dict[str, Callable[[], None]] = {
    "no_tune_allocator": no_tune_allocator,
    "trim_per_window": trim_per_window,
    "switch_interval_5ms": switch_interval_5ms,
    "one_arena": one_arena,
}


def apply(names: Sequence[str]) -> None:
    for name in names:
        PATCHES[name]()
