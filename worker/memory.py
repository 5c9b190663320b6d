"""Allocator settings for the worker's threads, and giving freed heap back (glibc; elsewhere no-ops).

Each thread that allocates keeps glibc's arena of its own (up to 8 per core): capping them at two
made the poll thread's tokenizer and the model thread wait on each other's arena lock (the worker
with a near-free model at 0.42x the slowest part alone against 0.57x), and saved no memory with
heap trimming on (backlog peak 1.21x idle against 1.18x).

The model thread's arena is not glibc's main heap but a chain of 64 MiB heaps, and by default glibc
unmaps a heap, or shrinks its top, as soon as a forward pass frees it: the next pass faults the
same pages back in. The model alone (the benchmark's ceiling, on the main thread's heap) took ~0
minor faults per run; the worker ~250 per event, 0.89x the model alone against 1.01x with no
faults from trimming. So tune_allocator keeps up to TOP_PAD free at the top of each heap and
lets glibc shrink a top only beyond TRIM_THRESHOLD; setting either turns glibc's dynamic mmap
threshold off, so it is fixed at the 32 MiB the dynamic one climbs to (large activation buffers
come from the heap and are reused; a 1 MiB threshold spent a fifth of the model's CPU time in page
faults). What fragmentation leaves free inside the heaps the model thread hands back once the
RSS outgrows a headroom (HeapTrimmer): malloc_trim releases free chunks, not a thread arena's
top, so the passes' working set stays resident (docs/benchmarks.md, "Tried and measured"). Setting any of these through glibc's own MALLOC_*_ variables (or
GLIBC_TUNABLES) leaves the allocator to the environment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for its dynamic threshold (half a thread heap)
TOP_PAD = 64 << 20  # a thread heap's size: a pass's buffers stay mapped for the next
TRIM_THRESHOLD = 128 << 20
MAX_BACKOFF = 64.0  # a trim's wait grows to 64 x (its time / its share): ~8 s after a 6 ms trim

# The kernel caches behind torch's CPU ops, bounded (see bound_kernel_caches): variable -> the
# worker's default, with the variables that already set the same cache (set by the user: left alone).
KERNEL_CACHES = {
    "ONEDNN_PRIMITIVE_CACHE_CAPACITY": ("8", ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "DNNL_PRIMITIVE_CACHE_CAPACITY")),
    "LRU_CACHE_CAPACITY": ("1", ("LRU_CACHE_CAPACITY",)),
}

# mallopt option -> (glibc's environment variable, its GLIBC_TUNABLES name): set by the user, left alone.
_OPTIONS = {
    _M_MMAP_THRESHOLD: ("MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold"),
    _M_TOP_PAD: ("MALLOC_TOP_PAD_", "glibc.malloc.top_pad"),
    _M_TRIM_THRESHOLD: ("MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold"),
}


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def resident_bytes() -> int:
    """This process's RSS from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def release_free_heap() -> bool:
    """glibc's malloc_trim(0): free pages inside the heap go back to the system. False elsewhere."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False


@dataclass
class HeapTrimmer:
    """Hands freed heap memory back whenever the RSS drifts more than a headroom above a baseline.

    Windows of varying batch shapes fragment glibc's heap: the freed activation buffers of past
    passes stay resident, and under a backlog the free part of the heap grew from 24 to 354 MiB in
    45 s while the part in use stayed near 170 MiB (mallinfo2). malloc_trim hands those pages back;
    doing it only once the headroom is used up costs one /proc read per pass and a trim now and
    then, instead of faulting every pass's buffers in afresh. The readings and the trim are
    arguments, so the rule is tested without a heap.
    """

    limit_bytes: int
    read_rss: Callable[[], int] = resident_bytes
    trim: Callable[[], object] = release_free_heap
    clock: Callable[[], float] = time.monotonic
    # Trimming takes at most this share of the model thread's time. Memory that is not free heap
    # (CUDA's pinned host cache, threads' stacks) keeps the RSS above the limit whatever a trim
    # does; trimming after every pass for it cost a quarter of the throughput on a GPU. On 2 CPU
    # cores a trim took ~6 ms and a pass ~130 ms: 5% still trims after each pass that needs it
    # (2% let a backlog peak at 1.58x idle instead of 1.34x).
    max_time_share: float = 0.05
    # What a trim cannot hand back (oneDNN's kernel cache, librdkafka's queues, events in flight)
    # raises the floor: the limit follows the RSS after a trim plus this headroom, so trimming
    # keeps fighting free heap only, instead of memory that no trim releases.
    headroom_bytes: int = 64 << 20
    _not_before: float = 0.0
    # A trim held if the RSS stayed under the limit for its share of the time (the wait without
    # back-off). If it was over the limit again sooner, what the trim released was working set
    # (events in flight, librdkafka's fetch queues, buffers the next passes fault back in) or not
    # free heap at all: the next trim then waits twice as long, up to MAX_BACKOFF times; after one
    # that held, the wait is back to the share. With a near-free model (5 ms passes) trimming at a
    # fixed 5% cost the model thread a quarter of its time in page faults the share does not count.
    _backoff: float = 1.0
    _held_until: float = 0.0
    _over_too_soon: bool = False

    @classmethod
    def above_current(cls, headroom_bytes: int, read_rss: Callable[[], int] = resident_bytes) -> HeapTrimmer | None:
        """A trimmer with the current RSS as its baseline; None when it is off or RSS is unknown."""
        baseline = read_rss()
        if headroom_bytes <= 0 or baseline <= 0:
            return None
        return cls(baseline + headroom_bytes, read_rss, headroom_bytes=headroom_bytes)

    def after_pass(self) -> None:
        started = self.clock()
        if started < self._not_before:
            # Within the last trim's share, until the first reading over the limit: did it hold?
            if started < self._held_until and not self._over_too_soon:
                self._over_too_soon = self.read_rss() > self.limit_bytes
            return
        if self.read_rss() <= self.limit_bytes:
            return
        self._backoff = min(self._backoff * 2, MAX_BACKOFF) if self._over_too_soon else 1.0
        self._over_too_soon = False
        self.trim()
        ended = self.clock()
        left = self.read_rss()
        self.limit_bytes = max(self.limit_bytes, left + self.headroom_bytes)
        share = (ended - started) / self.max_time_share
        self._held_until = started + share
        self._not_before = started + share * self._backoff
        if log.isEnabledFor(logging.DEBUG):
            log.debug("heap trimmed", extra={"ms": round((ended - started) * 1000, 2), "rss_mib": left >> 20,
                                             "limit_mib": self.limit_bytes >> 20, "backoff": self._backoff})


def bound_kernel_caches(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Bounds the caches that oneDNN (ONEDNN_PRIMITIVE_CACHE_CAPACITY, 1,024 by default) and
    PyTorch's ideep layer over it (LRU_CACHE_CAPACITY, 1,024) keep of the kernels they build for
    each new input shape; returns what it set. Both read their variable at first use, so this runs
    before the first forward pass; a variable the user set is left as it is.

    A worker's batches come in hundreds of shapes, and in bfloat16 every new one built kernels that
    stayed: a MiniLM backlog peaked at 2.02x idle RSS. With both caches bounded it stayed at 1.11x
    (665 / 603 MiB), working as fast (docs/benchmarks.md, "Tried and measured"); either bound alone
    left 1.61x and 2.16x, since ideep's entries keep the primitives oneDNN's cache lets go.
    """
    chosen = {}
    for variable, (value, aliases) in KERNEL_CACHES.items():
        if not any(alias in environ for alias in aliases):
            environ[variable] = chosen[variable] = value
    return chosen


def set_by_environment(option: int, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the user set this malloc option through glibc's own variables."""
    variable, tunable = _OPTIONS[option]
    tunables = environ.get("GLIBC_TUNABLES", "")
    return variable in environ or any(part.split("=", 1)[0] == tunable for part in tunables.split(":"))


def tune_allocator() -> bool:
    """Returns whether the settings took: False off glibc, and where the environment sets any of them.

    The options act together (with a top pad, large blocks come from the heap's spare top whatever
    the mmap threshold), so a user's own MALLOC_*_ setting leaves the whole allocator to the user.
    """
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    user_set = [_OPTIONS[option][0] for option in _OPTIONS if set_by_environment(option)]
    if user_set:
        log.info("allocator left to the environment", extra={"set": user_set})
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    wanted = {
        _M_MMAP_THRESHOLD: MMAP_THRESHOLD,
        _M_TOP_PAD: TOP_PAD,
        _M_TRIM_THRESHOLD: TRIM_THRESHOLD,
    }
    # Every option is tried even where one is refused (a list, not all() over a generator).
    ok = all([mallopt(option, value) == 1 for option, value in wanted.items()])
    log.debug("allocator tuned", extra={"ok": ok, "top_pad": TOP_PAD})
    return ok
