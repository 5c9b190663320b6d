"""Offset tracking: which input offsets are safe to commit. Pure logic, thread-safe.

Every consumed record is tracked, in consumption order, the moment it is polled, and stays open
until the publisher finishes it: once the broker has acknowledged every output of its window (or,
in exactly-once mode, once the window's transaction has committed). The publisher counts
deliveries per window, so the tracker is told once per window, not once per output.
A partition's committable offset is one past the longest prefix of finished records, so a
commit never passes an output that has not been delivered.
"""

from __future__ import annotations

import threading
from collections import deque

TopicPartitionKey = tuple[str, int]


OPEN, FINISHED, FORGOTTEN = 1, 0, -1


class OffsetEntry:
    __slots__ = ("offset", "state")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.state = OPEN

    @property
    def forgotten(self) -> bool:
        """Its partition was revoked or lost: another worker owns the record now."""
        return self.state == FORGOTTEN


class OffsetTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._partitions: dict[TopicPartitionKey, deque[OffsetEntry]] = {}
        self._finished_up_to: dict[TopicPartitionKey, int] = {}
        self._committed: dict[TopicPartitionKey, int] = {}
        self._open = 0

    def track(self, topic: str, partition: int, offset: int) -> OffsetEntry:
        return self.track_all([(topic, partition, offset)])[0]

    def track_all(self, coordinates: list[tuple[str, int, int]]) -> list[OffsetEntry]:
        """`track` for a chunk of records, (topic, partition, offset) each, under one lock."""
        entries = [OffsetEntry(offset) for _, _, offset in coordinates]
        partitions = self._partitions
        with self._lock:
            for (topic, partition, _), entry in zip(coordinates, entries):
                queue = partitions.get((topic, partition))
                if queue is None:
                    queue = partitions[(topic, partition)] = deque()
                queue.append(entry)
            self._open += len(entries)
        return entries

    def finish(self, entries: list[OffsetEntry]) -> int:
        """These records' outputs are all delivered; returns how many it finished.

        Records of forgotten partitions stay forgotten: a late delivery must not finish them.
        """
        finished = 0
        with self._lock:
            for entry in entries:
                if entry.state == OPEN:
                    entry.state = FINISHED
                    finished += 1
            self._open -= finished
        return finished

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
                while queue and queue[0].state == FINISHED:
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
                    unfinished = sum(1 for entry in queue if entry.state == OPEN)
                    dropped += unfinished
                    self._open -= unfinished
                    for entry in queue:
                        entry.state = FORGOTTEN
                self._finished_up_to.pop(key, None)
                self._committed.pop(key, None)
        return dropped
