"""Allocator settings for the worker's threads, and giving freed heap back (glibc; elsewhere no-ops).

Each thread that allocates gets a glibc arena of its own (up to 8 per core), and freed activation
buffers stay resident in each; two arenas bound that growth across the poll, model and publish
threads. The mmap threshold is left to glibc, which raises it as large blocks are freed so that
torch's activation buffers are reused from the heap. A fixed low threshold (tried: 1 MiB) keeps
memory flatter but maps and faults in every buffer afresh: about a fifth of the model's CPU time
went to page faults (`bench/experiments.py workers --variants default,mmap_1mb`). Instead, the model
thread hands freed heap pages back once the RSS outgrows a headroom (HeapTrimmer); glibc's
MALLOC_MMAP_THRESHOLD_=1048576 in the environment still sets the low threshold where wanted.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8

ARENA_MAX = 2


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
    _not_before: float = 0.0

    @classmethod
    def above_current(cls, headroom_bytes: int, read_rss: Callable[[], int] = resident_bytes) -> HeapTrimmer | None:
        """A trimmer with the current RSS as its baseline; None when it is off or RSS is unknown."""
        baseline = read_rss()
        if headroom_bytes <= 0 or baseline <= 0:
            return None
        return cls(baseline + headroom_bytes, read_rss)

    def after_pass(self) -> None:
        started = self.clock()
        if started < self._not_before or self.read_rss() <= self.limit_bytes:
            return
        self.trim()
        ended = self.clock()
        self._not_before = started + (ended - started) / self.max_time_share
        if log.isEnabledFor(logging.DEBUG):
            log.debug("heap trimmed", extra={"ms": round((ended - started) * 1000, 2), "rss_mib": self.read_rss() >> 20})


def tune_allocator(arena_max: int = ARENA_MAX) -> bool:
    """Returns whether the setting took (False off glibc). glibc's own MALLOC_MMAP_THRESHOLD_ still applies."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_ARENA_MAX, arena_max) == 1
    log.debug("allocator tuned", extra={"ok": ok, "arena_max": arena_max})
    return ok
