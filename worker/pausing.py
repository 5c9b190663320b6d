"""The one place that pauses and resumes the consumer's partitions (back-pressure from the model).

Pausing is the safety net, not the everyday brake: librdkafka throws away a paused partition's
prefetched records and fetches them again on resume (librdkafka#5343). A worker that paused at every
full model queue fetched each record ~2.2 times under a backlog. So while the model keeps taking
windows, the poll loop holds the closed ones and takes at most one record per turn (each poll still
serves rebalances, errors and statistics; librdkafka bounds its own prefetch); `PauseTimer` says when
the model has taken nothing for long enough that the partitions should be paused.

librdkafka keeps a partition's pause flag across unassignment and reassignment: a partition paused,
lost or revoked, and given back after the worker resumed "the current assignment" (which no longer
held it) would come back paused and never be fetched again. So `PartitionPauser` never pauses or resumes
"the assignment": it sets each newly assigned partition explicitly to what the worker wants now,
clears the flag of each partition it loses, and resumes exactly the partitions it paused.
Knows nothing of torch; called only on the poll thread (the consumer is not thread-safe).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import TopicPartition

log = logging.getLogger(__name__)

PartitionKey = tuple[str, int]


def keys_of(partitions: Iterable[TopicPartition]) -> set[PartitionKey]:
    return {(tp.topic, tp.partition) for tp in partitions}


def _partitions(keys: Iterable[PartitionKey]) -> list[TopicPartition]:
    return [TopicPartition(topic, partition) for topic, partition in sorted(keys)]


class PauseTimer:
    """When back-pressure should pause the partitions: once windows have waited for the model for
    `pause_after_s` without it taking one. Pure logic: the clock is an argument."""

    def __init__(self, pause_after_s: float) -> None:
        self.pause_after_s = pause_after_s
        self._since: float | None = None

    def holding(self, now: float) -> None:
        """A window is held (the model's queue is full): the clock starts unless already running."""
        if self._since is None:
            self._since = now

    def progressed(self, now: float) -> None:
        """The model took a window: restart the clock if windows are still held."""
        if self._since is not None:
            self._since = now

    def clear(self) -> None:
        """Nothing is held any more."""
        self._since = None

    def should_pause(self, now: float) -> bool:
        return self._since is not None and now - self._since >= self.pause_after_s


class PartitionPauser:
    def __init__(self, consumer: Any, on_change: Callable[[int, int], None] | None = None) -> None:
        """`on_change(assigned, paused)` is told the counts after every change (for gauges)."""
        self.consumer = consumer
        self.on_change = on_change
        self.holding = False  # back-pressure is on: every assigned partition should be paused
        self.assignment: set[PartitionKey] = set()
        self.paused: set[PartitionKey] = set()
        # Assigned in a rebalance callback, before librdkafka applies the assignment: a partition it
        # has never seen cannot be paused yet, so their state is set once poll() returns (`settle`).
        self._unsettled: set[PartitionKey] = set()

    @property
    def active(self) -> set[PartitionKey]:
        """Assigned partitions the worker wants fetched."""
        return self.assignment - self.paused

    def hold(self) -> None:
        """Back-pressure on: pause every assigned partition."""
        if self.holding:
            return
        self.holding = True
        self._pause(self.assignment - self.paused)
        log.debug("model busy: partitions paused", extra={"partitions": len(self.paused)})

    def release(self) -> None:
        """Back-pressure off: resume exactly the partitions this class paused."""
        if not self.holding:
            return
        self.holding = False
        self._resume(self.paused)

    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        """From the assign callback. Clears any flag kept from an earlier assignment now; `settle`
        sets each partition's state explicitly once the assignment is in effect."""
        keys = keys_of(partitions)
        self.assignment |= keys
        self._unsettled |= keys
        self.consumer.resume(_partitions(keys))
        self.paused -= keys
        self._changed()

    def settle(self) -> None:
        """After each poll: newly assigned partitions are set to what the worker wants now."""
        if not self._unsettled:
            return
        keys = self._unsettled & self.assignment
        self._unsettled.clear()
        if self.holding:
            self._pause(keys)
        else:
            self._resume(keys)

    def removed(self, partitions: Iterable[TopicPartition]) -> set[PartitionKey]:
        """From the revoke or lost callback: forget them and clear their pause flag in librdkafka,
        so that nothing of this assignment survives into the next one. Returns the keys that
        were paused."""
        keys = keys_of(partitions)
        were_paused = keys & self.paused
        self.assignment -= keys
        self._unsettled -= keys
        self.paused -= keys
        self.consumer.resume(_partitions(keys))
        self._changed()
        return were_paused

    def _pause(self, keys: set[PartitionKey]) -> None:
        if keys:
            self.consumer.pause(_partitions(keys))
            self.paused |= keys
        self._changed()

    def _resume(self, keys: set[PartitionKey]) -> None:
        # Explicit even for partitions this class never paused: their flag may be librdkafka's memory.
        if keys:
            self.consumer.resume(_partitions(keys))
            self.paused -= keys
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(len(self.assignment), len(self.paused))
