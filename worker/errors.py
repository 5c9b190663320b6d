"""Errors that stop the worker, and the holder that carries the first one to the poll loop.

Stage threads and librdkafka callbacks never raise into their callers: they record the
first failure here and the poll loop raises it on its next turn.
"""

from __future__ import annotations

import threading


class WorkerError(RuntimeError):
    """The worker cannot go on safely; it stops without committing past the failure."""


class DeliveryError(WorkerError):
    """The broker did not accept an output record."""


class FirstFailure:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._error: BaseException | None = None

    def record(self, error: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = error

    @property
    def error(self) -> BaseException | None:
        return self._error

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
