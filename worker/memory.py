"""Allocator settings for the worker's threads (glibc only; elsewhere a no-op).

Each thread that allocates gets a glibc arena of its own (up to 8 per core), and freed activation
buffers stay resident in each; two arenas bound that growth across the poll, model and publish
threads. The mmap threshold is left to glibc, which raises it as large blocks are freed so that
torch's activation buffers are reused from the heap. A fixed low threshold (tried: 1 MiB) keeps
memory flatter but maps and faults in every buffer afresh: about a fifth of the model's CPU time
went to page faults (`bench/experiments.py workers --variants default,mmap_1mb`). Where memory
matters more than speed, glibc's MALLOC_MMAP_THRESHOLD_=1048576 in the environment sets it back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8

ARENA_MAX = 2


def tune_allocator(arena_max: int = ARENA_MAX) -> bool:
    """Returns whether the setting took (False off glibc). glibc's own MALLOC_MMAP_THRESHOLD_ still applies."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_ARENA_MAX, arena_max) == 1
    log.debug("allocator tuned", extra={"ok": ok, "arena_max": arena_max})
    return ok
