"""Offset tracking: which input offsets are safe to commit. Pure logic, thread-safe.

Every consumed record is tracked, in consumption order, the moment it is polled. It holds one
"in progress" token until the publisher says how many output records it produced for it
(`expect`), then one token per output until each is acknowledged by the broker (`ack`).
A partition's committable offset is one past the longest prefix of finished records, so a
commit never passes an output that has not been delivered.
"""

from __future__ import annotations

import threading
from collections import deque

TopicPartitionKey = tuple[str, int]


class OffsetEntry:
    __slots__ = ("offset", "remaining")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.remaining = 1

    @property
    def forgotten(self) -> bool:
        """Its partition was revoked or lost: another worker owns the record now."""
        return self.remaining < 0


class OffsetTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._partitions: dict[TopicPartitionKey, deque[OffsetEntry]] = {}
        self._finished_up_to: dict[TopicPartitionKey, int] = {}
        self._committed: dict[TopicPartitionKey, int] = {}
        self._open = 0

    def track(self, topic: str, partition: int, offset: int) -> OffsetEntry:
        entry = OffsetEntry(offset)
        with self._lock:
            queue = self._partitions.get((topic, partition))
            if queue is None:
                queue = self._partitions[(topic, partition)] = deque()
            queue.append(entry)
            self._open += 1
        return entry

    def expect(self, entry: OffsetEntry, outputs: int) -> bool:
        """The record's outputs have been handed to the producer: wait for `outputs` acks.

        Returns True when this finished the record (no outputs to wait for).
        """
        return self.ack(entry, 1 - outputs)

    def ack(self, entry: OffsetEntry, count: int = 1) -> bool:
        """Count `count` delivered outputs; returns True when this finished the record."""
        with self._lock:
            entry.remaining -= count
            if entry.remaining == 0:
                self._open -= 1
                return True
            return False

    def open_count(self) -> int:
        """Records tracked but not yet finished."""
        return self._open

    def committable(self, include_committed: bool = False) -> dict[TopicPartitionKey, int]:
        """Next offset to commit per partition.

        Only partitions that advanced since `mark_committed`, unless `include_committed`.
        """
        with self._lock:
            for key, queue in self._partitions.items():
                last = None
                while queue and queue[0].remaining == 0:
                    last = queue.popleft().offset
                if last is not None:
                    self._finished_up_to[key] = last + 1
            return {
                key: offset
                for key, offset in self._finished_up_to.items()
                if include_committed or self._committed.get(key, -1) < offset
            }

    def mark_committed(self, offsets: dict[TopicPartitionKey, int]) -> None:
        with self._lock:
            for key, offset in offsets.items():
                if self._committed.get(key, -1) < offset:
                    self._committed[key] = offset

    def unmark_committed(self, keys: list[TopicPartitionKey]) -> None:
        """A commit failed: offer these partitions again on the next `committable`."""
        with self._lock:
            for key in keys:
                self._committed.pop(key, None)

    def forget(self, keys: list[TopicPartitionKey]) -> int:
        """Stop tracking partitions this worker no longer owns; returns how many records were open."""
        dropped = 0
        with self._lock:
            for key in keys:
                queue = self._partitions.pop(key, None)
                if queue:
                    unfinished = sum(1 for entry in queue if entry.remaining > 0)
                    dropped += unfinished
                    self._open -= unfinished
                    # Parked far below zero so that late acks for them can never finish them.
                    for entry in queue:
                        entry.remaining = -(10**9)
                self._finished_up_to.pop(key, None)
                self._committed.pop(key, None)
        return dropped
