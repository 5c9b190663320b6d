"""OS names for the worker's threads, so that `top -H`, `ps -L`, py-spy and /proc tell them apart.

Python 3.11 names threads only for itself. Threads a named thread starts (torch's OpenMP helpers
on the model thread) inherit its name.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

_PR_SET_NAME = 15
_NAME_BYTES = 15  # the kernel keeps 15 bytes and a NUL


def name_os_thread(name: str) -> bool:
    """Give the calling thread `name` as its OS name (Linux); False where that is not possible."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    return prctl(_PR_SET_NAME, name.encode()[:_NAME_BYTES], 0, 0, 0) == 0
