"""Stall detection: a safety net for partitions that should be fetched but are not. Pure logic.

A partition is stalled when it is assigned, the worker has not paused it, records are waiting in it,
and neither its fetch position nor the worker's consumed position has moved for longer than the
timeout (under back-pressure librdkafka stops fetching while its queue is full, and the worker
still takes records from it). The inputs come from librdkafka's statistics
(`statistics.interval.ms`), so the check costs nothing per event; the clock is an argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

PartitionKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class FetchProgress:
    """One partition, as librdkafka last reported it."""

    position: int  # next offset to fetch (negative: not known yet)
    end: int  # last stable offset (read_committed) or high watermark (negative: not known yet)
    consumed: int = -1  # one past the last record handed to the worker (negative: none yet)

    @property
    def waiting(self) -> int | None:
        """Records in the partition past what was fetched; None when either end is unknown."""
        if self.position < 0 or self.end < 0:
            return None
        return max(0, self.end - self.position)


@dataclass(frozen=True, slots=True)
class Stall:
    topic: str
    partition: int
    waiting: int
    seconds: float

    def reason(self) -> str:
        return (
            f"partition {self.topic}:{self.partition} stalled: {self.waiting} records waiting, "
            f"nothing fetched for {self.seconds:.0f}s although the worker has not paused it"
        )


def fetch_progress(stats: Mapping[str, Any]) -> dict[PartitionKey, FetchProgress]:
    """Per-partition fetch position and end from a librdkafka statistics document.

    The end is the last stable offset where librdkafka reports one: past it, records of open
    transactions cannot be fetched by a read_committed consumer and must not count as waiting.
    Fetching past a transaction's control record moves the position to the end, so a fully
    consumed partition never looks like one with a record waiting.
    """
    progress = {}
    for topic, topic_stats in stats.get("topics", {}).items():
        for partition, partition_stats in topic_stats.get("partitions", {}).items():
            if partition == "-1":
                continue
            end = partition_stats.get("ls_offset", -1)
            if end < 0:
                end = partition_stats.get("hi_offset", -1)
            position = partition_stats.get("next_offset", -1)
            if position < 0:
                # Not fetching yet (e.g. paused before its first fetch): it starts from its commit.
                position = partition_stats.get("committed_offset", -1)
            progress[(topic, int(partition))] = FetchProgress(position, end, partition_stats.get("app_offset", -1))
    return progress


class StallDetector:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        # Per watched partition: the positions last seen and since when they have not moved with records waiting.
        self._seen: dict[PartitionKey, tuple[tuple[int, int], float]] = {}

    def observe(
        self,
        now: float,
        progress: Mapping[PartitionKey, FetchProgress],
        watched: Iterable[PartitionKey],
        find_end: Callable[[PartitionKey], int] | None = None,
    ) -> list[Stall]:
        """`watched`: the partitions the worker wants fetched now (assigned, not paused by it).

        A partition's clock starts when it is first watched, so one just assigned or resumed is
        never stalled before a whole timeout has passed, and restarts whenever its position moves
        or it is known to have nothing waiting. librdkafka learns a partition's end only from
        fetches, so a partition never fetched has none: once its clock has run past the timeout,
        `find_end` (a broker query) is asked for it, which is rare enough to cost nothing.
        """
        seen: dict[PartitionKey, tuple[tuple[int, int], float]] = {}
        stalls = []
        for key in watched:
            report = progress.get(key, FetchProgress(-1, -1))
            positions = (report.position, report.consumed)
            last_positions, since = self._seen.get(key, (positions, now))
            waiting = report.waiting
            if waiting is None and find_end is not None and report.position >= 0 and now - since > self.timeout_s:
                waiting = FetchProgress(report.position, find_end(key)).waiting
            if positions != last_positions or waiting == 0:
                since = now  # moving, or nothing to fetch: the clock runs only while records may wait
            seen[key] = (positions, since)
            if waiting and now - since > self.timeout_s:
                stalls.append(Stall(key[0], key[1], waiting, now - since))
        self._seen = seen
        return sorted(stalls, key=lambda stall: (stall.topic, stall.partition))
