"""Changes to the worker tried out by `bench/experiments.py`, applied in the worker's own process.

Nothing here is used by the benchmark itself (`bench/run.py` measures the worker as it is),
except `name_os_threads`, which changes nothing but thread names (`bench/host_capacity.py`).
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

Later on 2026-11-27: glibc handing the model thread's freed heap tops back after every pass was the
cost (the worker took ~250 minor faults per event, the model alone ~0). The worker now keeps a
top pad (`worker.memory`); `dynamic_thresholds` is the allocator before that. Tried and left out:
`trim_mid_pass` (malloc_trim from another thread during a pass: lower peak, 1.19x, but more faults);
copying a window's outputs into anonymous mmaps (the heap grew as fast); glibc arenas per thread
or one arena without trimming (peaks 1.61-1.91x); mimalloc (cmeel-mimalloc, LD_PRELOAD: 0.88, no
better); a trimming headroom of 128 or 192 MiB (within the noise; 192 peaked at 1.49x).
`log_heap` prints glibc's per-arena sizes every 5 s into the worker's log.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"  # Debian's libjemalloc2


def dynamic_malloc_thresholds() -> None:
    """The allocator as before 2026-11-27: two arenas, glibc's dynamic mmap and trim thresholds."""
    import ctypes

    import worker.memory

    def tune_allocator(arena_max: int = worker.memory.ARENA_MAX) -> bool:
        mallopt = worker.memory._libc().mallopt  # type: ignore[union-attr]
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        return mallopt(worker.memory._M_ARENA_MAX, arena_max) == 1

    worker.memory.tune_allocator = tune_allocator  # type: ignore[assignment]


def name_os_threads() -> None:
    """Give each Python thread its `threading` name as its OS name (Python 3.11 does not), so that
    /proc/PID/task/*/stat tells the model and publish threads apart. Threads a named thread starts
    (torch's OpenMP helpers) inherit its name."""
    import ctypes
    import threading

    prctl = ctypes.CDLL(None).prctl
    pr_set_name = 15
    bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def named_bootstrap(self: threading.Thread) -> None:
        prctl(pr_set_name, self.name.encode()[:15], 0, 0, 0)  # the OS keeps 15 bytes
        bootstrap(self)

    threading.Thread._bootstrap_inner = named_bootstrap  # type: ignore[attr-defined]


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


def log_heap() -> None:
    """Print glibc's per-arena heap figures (malloc_info) every 5 s: HEAPLOG lines on stderr."""
    import ctypes
    import re
    import sys
    import threading
    import time

    libc = ctypes.CDLL(None)
    libc.open_memstream.restype = ctypes.c_void_p
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]

    def snapshot() -> str:
        buffer, size = ctypes.c_char_p(), ctypes.c_size_t()
        stream = libc.open_memstream(ctypes.byref(buffer), ctypes.byref(size))
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        text = ctypes.string_at(buffer, size.value).decode()
        libc.free(buffer)
        return text

    def report() -> None:
        while True:
            time.sleep(5)
            text = snapshot()
            parts = []
            for number, body in re.findall(r'<heap nr="(\d+)">(.*?)</heap>', text, re.S):
                free = sum(int(x) for x in re.findall(r'<total type="(?:fast|rest)" count="\d+" size="(\d+)"', body))
                current = int(re.search(r'<system type="current" size="(\d+)"', body).group(1))
                parts.append(f"arena{number} system={current >> 20}M free={free >> 20}M")
            print(f"HEAPLOG t={time.monotonic():.1f} " + " ".join(parts), file=sys.stderr, flush=True)

    threading.Thread(target=report, name="heap-log", daemon=True).start()


def trim_mid_pass() -> None:
    """Trim from a thread of its own while the model is inside a pass, not after it.

    The pages the pass is using are then allocated, so malloc_trim cannot hand them back: it
    releases holes and other threads' garbage, not the working set the next pass faults back in.
    """
    import threading
    import time

    import worker.inference

    stages: list = []
    trimmers: list = []
    original_init = worker.inference.InferenceStage.__init__

    def __init__(self, *args, after_pass=None, **kwargs):  # type: ignore[no-untyped-def]
        original_init(self, *args, after_pass=None, **kwargs)
        stages.append(self)
        if after_pass is not None:
            trimmers.append(after_pass.__self__)

    def watch() -> None:
        not_before = 0.0
        while True:
            time.sleep(0.01)
            if not stages or not trimmers:
                continue
            stage, trimmer = stages[-1], trimmers[-1]
            since = stage.busy_since
            now = time.monotonic()
            if since is None or now - since < 0.02 or now < not_before:
                continue
            if trimmer.read_rss() <= trimmer.limit_bytes:
                continue
            started = time.monotonic()
            trimmer.trim()
            not_before = started + (time.monotonic() - started) / trimmer.max_time_share

    worker.inference.InferenceStage.__init__ = __init__  # type: ignore[method-assign]
    threading.Thread(target=watch, name="trim-mid-pass", daemon=True).start()


PATCHES: dict[str, Callable[[], None]] = {
    "name_os_threads": name_os_threads,
    "trim_mid_pass": trim_mid_pass,
    "log_heap": log_heap,
    "helpers_nice_19": helpers_nice_19,
    "log_model_waits": log_model_waits,
    "torch_on_main": torch_on_main,
    "busy_poll_held": busy_poll_held,
    "no_tune_allocator": no_tune_allocator,
    "dynamic_malloc_thresholds": dynamic_malloc_thresholds,
    "trim_per_window": trim_per_window,
    "switch_interval_5ms": switch_interval_5ms,
    "switch_interval_200us": switch_interval_200us,
    "one_arena": one_arena,
}


def apply(names: Sequence[str]) -> None:
    for name in names:
        PATCHES[name]()
