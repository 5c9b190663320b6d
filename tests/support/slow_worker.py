"""`python -m tests.support.slow_worker run`: the real worker, with its model slowed by known waits.

A model's speed depends on the machine that runs it (and on CUDA being there); a test that needs a
slow model (slower than `max.poll.interval.ms`, slower than the poll loop, or slow enough that work
remains when a fault lands) gets one on any machine by adding a fixed wait to each batch's pass
(`SLOW_BATCH_ENV`, seconds). `SLOW_LOAD_ENV` adds a wait before the model loads, for a start-up
phase (not ready yet) that lasts at least that long. Everything else is real: the worker package,
the broker and the model. Only this launcher reads these variables, never the worker package. The
warm-up runs at full speed: the per-pass wait starts with the first batch of events.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

SLOW_BATCH_ENV = "ENCODER_WORKER_TEST_SLOW_BATCH_S"
SLOW_LOAD_ENV = "ENCODER_WORKER_TEST_SLOW_LOAD_S"


def slow_down(encoder: Any, seconds: float) -> None:
    """Make this encoder wait `seconds` after each forward pass (on the thread that runs it)."""
    real_encode = encoder.encode

    def encode(token_ids: list[list[int]], *args: Any, **kwargs: Any) -> Any:
        encoded = real_encode(token_ids, *args, **kwargs)
        time.sleep(seconds)  # releases the GIL, as a long torch pass does
        return encoded

    encoder.encode = encode


def seconds_from(name: str) -> float:
    raw = os.environ.get(name, "0")
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: not a number of seconds") from None
    if not seconds >= 0:
        raise ValueError(f"{name}={raw!r}: must be zero or more")
    return seconds


def main() -> int:
    import worker.cli  # imports no torch: the worker's allocator settings still come before it

    try:
        batch_s, load_s = seconds_from(SLOW_BATCH_ENV), seconds_from(SLOW_LOAD_ENV)
    except ValueError as exc:
        print(f"slow_worker: {exc}", file=sys.stderr)
        return 2
    load_encoder = worker.cli.load_encoder

    def load_slowed_encoder(settings: Any) -> Any:
        time.sleep(load_s)
        encoder = load_encoder(settings)  # loaded and warmed up at full speed
        if batch_s:
            slow_down(encoder, batch_s)
        return encoder

    worker.cli.load_encoder = load_slowed_encoder  # serve() looks it up when it runs
    return worker.cli.main()


if __name__ == "__main__":
    sys.exit(main())
