"""Allocator settings that keep the worker's memory flat under load (glibc only; elsewhere a no-op).

glibc raises its mmap threshold each time a large block is freed, so after a few batches torch's
activation buffers come from the heap, where fragmentation across threads keeps them resident:
the process grows well past what one batch needs. A fixed threshold sends large blocks to mmap,
which returns them to the system when freed; fewer arenas bound the per-thread heaps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

MMAP_THRESHOLD_BYTES = 1 << 20
ARENA_MAX = 2


def tune_allocator(mmap_threshold_bytes: int = MMAP_THRESHOLD_BYTES, arena_max: int = ARENA_MAX) -> bool:
    """Returns whether the settings took (False off glibc)."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, mmap_threshold_bytes) == 1 and mallopt(_M_ARENA_MAX, arena_max) == 1
    log.debug("allocator tuned", extra={"ok": ok, "mmap_threshold": mmap_threshold_bytes, "arena_max": arena_max})
    return ok
