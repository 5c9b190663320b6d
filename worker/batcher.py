"""Batch policy: pure logic, clock passed in.

Events arrive in input order and gather into a *window*. A window closes when
- it holds `max_size` events, or adding the next event would push its padded cost
  (longest sequence × batch size) past `max_tokens` — when length sorting is off;
- it holds `sort_window` events — when length sorting is on (`sort_window` above 1);
- `max_wait_ms` have passed since its first event;
- or at once, when `close_when_idle` is on and no window is waiting for the model: the model takes
  it the moment it is done with the window in hand, so it never sits idle while the next window is
  formed (the poll thread may be busy tokenizing a chunk for tens of ms). Under load a window fills
  for as long as the one before it waits, and windows keep the size of one pass's worth of traffic.

A closed window is cut into *batches* (one forward pass each): its events are sorted by token
length and cut where that costs least (padded tokens plus a per-pass overhead), so that no
batch exceeds `max_size` events or `max_tokens` padded tokens.
Sorting a window of mixed lengths keeps padding small; the window itself stays in input order, so
outputs can be published in the order the events came in.

Entries that need no model work (rejected records) ride along in the window, in order, with no
token length.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")

# Used until warm-up has measured the model's own per-pass cost.
DEFAULT_PASS_OVERHEAD_TOKENS = 64


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_size: int = 64
    max_tokens: int = 4096
    max_wait_ms: int = 50
    sort_window: int = 512
    # What one more forward pass costs, in padded tokens: the fixed per-pass work (kernel launches,
    # Python, the head) over the cost of one token. Decides how sorted windows are cut.
    pass_overhead_tokens: int = DEFAULT_PASS_OVERHEAD_TOKENS
    close_when_idle: bool = True

    def __post_init__(self) -> None:
        if (
            self.max_size < 1
            or self.max_tokens < 1
            or self.max_wait_ms < 0
            or self.sort_window < 1
            or self.pass_overhead_tokens < 0
        ):
            raise ValueError(f"invalid batch policy {self}")

    @property
    def sorting(self) -> bool:
        # Any window of two or more is worth sorting, also one no larger than max_size (a GPU's
        # max_size of 512 with the default window): it is still cut where padding costs least.
        return self.sort_window > 1


@dataclass(slots=True)
class Window(Generic[T]):
    """Entries in input order, and the forward passes over them (indices, shortest first)."""

    entries: list[T]
    lengths: list[int | None]
    batches: list[list[int]] = field(default_factory=list)
    opened_at: float = 0.0
    # The caller's data riding along with the window (its trace span); the batcher never reads it.
    tag: Any = None

    @property
    def model_events(self) -> int:
        return sum(len(batch) for batch in self.batches)

    def padded_tokens(self) -> int:
        return sum(max(self.lengths[i] for i in batch) * len(batch) for batch in self.batches)  # type: ignore[type-var]

    def real_tokens(self) -> int:
        return sum(length for length in self.lengths if length is not None)


def plan_batches(lengths: list[int | None], policy: BatchPolicy, sort: bool) -> list[list[int]]:
    """Cut the entries that have a length into forward passes.

    Without `sort`, entries keep their order and are cut greedily at the limits. With `sort`, they
    are ordered by length and cut where it minimises the window's total cost — padded tokens plus
    `pass_overhead_tokens` per forward pass — within `max_size` and `max_tokens`. A greedy cut
    would put a 40-token text and a 250-token text in one batch just because the batch had room.
    A single entry longer than `max_tokens` still gets a batch of its own.
    """
    order = [i for i, length in enumerate(lengths) if length is not None]
    if not sort:
        return cut_in_order(order, lengths, policy)
    order.sort(key=lengths.__getitem__)  # type: ignore[arg-type]
    sizes: list[int] = [lengths[i] for i in order]  # type: ignore[misc]
    start = least_cost_starts(sizes, policy)
    batches: list[list[int]] = []
    end = len(sizes)
    while end > 0:
        batches.append(order[start[end] : end])
        end = start[end]
    batches.reverse()
    return batches


def least_cost_starts(sizes: list[int], policy: BatchPolicy) -> list[int]:
    """For each `end`, where the last batch of the least-cost cut of `sizes[:end]` (ascending) starts.

    The dynamic programme: best[end] = min over `first` of best[first] + longest × (end - first) +
    overhead, with `first` no further back than the batch limits allow; a batch's longest is its
    last size. It is solved a run of equal sizes at a time, with numpy, instead of an end at a time:
    adding a text of size s to a prefix costs at least s, so for an end inside a run, a batch
    starting one text further back within the run never costs more. The best start is then the
    best one at or before the run's start (a suffix minimum over those, the same for every end of
    the run), or, for ends past the reach of a batch, the furthest the limits allow. Ties go to the
    earliest start, as a plain loop over starts would choose.
    """
    count = len(sizes)
    best = np.zeros(count + 1)  # whole numbers, exact in float64
    start = np.zeros(count + 1, dtype=np.int64)
    overhead = policy.pass_overhead_tokens
    run_start = 0
    while run_start < count:
        size = sizes[run_start]
        run_end = bisect.bisect_right(sizes, size, run_start)
        reach = max(1, min(policy.max_size, policy.max_tokens // max(1, size)))  # rows one batch may hold
        lowest = max(0, run_start + 1 - reach)
        # best[first] - size × first for starts at or before the run's; backwards, so that a running
        # minimum is the minimum over [first, run_start] and its latest position the earliest start.
        backwards = (best[lowest : run_start + 1] - size * np.arange(lowest, run_start + 1))[::-1]
        minima = np.minimum.accumulate(backwards)
        positions = np.maximum.accumulate(np.where(backwards == minima, np.arange(len(backwards)), 0))
        ends = np.arange(run_start + 1, min(run_end, run_start + reach) + 1)
        back = run_start - (ends - np.minimum(reach, ends))  # how far before the run the reach goes
        best[ends] = minima[back] + size * ends + overhead
        start[ends] = run_start - positions[back]
        # Ends of a long run beyond the reach: a full batch of the run's own texts after the best
        # cut of what comes before it.
        block = int(ends[-1]) + 1
        while block <= run_end:
            later = np.arange(block, min(run_end, block + reach - 1) + 1)
            best[later] = best[later - reach] + size * reach + overhead
            start[later] = later - reach
            block = int(later[-1]) + 1
        run_start = run_end
    return start.tolist()


def cut_in_order(order: list[int], lengths: list[int | None], policy: BatchPolicy) -> list[list[int]]:
    """Cut `order` greedily, without reordering, wherever `max_size` or `max_tokens` would be passed."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        length: int = lengths[i]  # type: ignore[assignment]
        new_longest = max(longest, length)
        if current and (len(current) >= policy.max_size or new_longest * (len(current) + 1) > policy.max_tokens):
            batches.append(current)
            current, new_longest = [], length
        current.append(i)
        longest = new_longest
    if current:
        batches.append(current)
    return batches


class Batcher(Generic[T]):
    """Gathers entries into windows under a `BatchPolicy`; `now` is seconds on any monotonic clock."""

    def __init__(self, policy: BatchPolicy) -> None:
        self.policy = policy
        self._entries: list[T] = []
        self._lengths: list[int | None] = []
        self._model_count = 0
        self._longest = 0
        self._opened_at: float | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def deadline(self) -> float | None:
        """When the open window must close, or None when nothing is waiting."""
        if self._opened_at is None:
            return None
        return self._opened_at + self.policy.max_wait_ms / 1000.0

    def add(self, entry: T, length: int | None, now: float) -> list[Window[T]]:
        """Add one entry; returns the windows this closes (zero, one, or two)."""
        closed: list[Window[T]] = []
        if length is not None and not self.policy.sorting and self._model_count:
            longest = max(self._longest, length)
            if longest * (self._model_count + 1) > self.policy.max_tokens:
                closed.append(self._close())
        if self._opened_at is None:
            self._opened_at = now
        self._entries.append(entry)
        self._lengths.append(length)
        if length is not None:
            self._model_count += 1
            self._longest = max(self._longest, length)
            limit = self.policy.sort_window if self.policy.sorting else self.policy.max_size
            if self._model_count >= limit:
                closed.append(self._close())
        return closed

    def add_all(self, entries: list[T], lengths: list[int | None], now: float) -> list[Window[T]]:
        """`add` for a polled chunk, in order; returns the windows it closes.

        With sorting on, a window closes only at `sort_window` entries with a length, so the chunk
        is cut into slices at those points instead of being added an entry at a time.
        """
        if not self.policy.sorting:
            closed: list[Window[T]] = []
            for entry, length in zip(entries, lengths):
                closed += self.add(entry, length, now)
            return closed
        model_rows = range(len(lengths)) if None not in lengths else [i for i, n in enumerate(lengths) if n is not None]
        closed = []
        start = taken = 0  # taken: entries of model_rows already placed
        while start < len(entries):
            if self._opened_at is None:
                self._opened_at = now
            room = self.policy.sort_window - self._model_count
            if len(model_rows) - taken < room:  # the rest of the chunk fits in the open window
                self._entries += entries[start:]
                self._lengths += lengths[start:]
                self._model_count += len(model_rows) - taken
                break
            end = model_rows[taken + room - 1] + 1  # the window closes after its last entry
            self._entries += entries[start:end]
            self._lengths += lengths[start:end]
            self._model_count += room
            taken += room
            closed.append(self._close())
            start = end
        return closed

    def poll(self, now: float, model_wants_window: bool = False) -> list[Window[T]]:
        """Close the open window when its wait is over, or (`close_when_idle`) when no window is
        waiting for the model (`model_wants_window`)."""
        deadline = self.deadline()
        if deadline is not None and (now >= deadline or (model_wants_window and self.policy.close_when_idle)):
            return [self._close()]
        return []

    def flush(self) -> list[Window[T]]:
        """Close whatever is open (shutdown, rebalance)."""
        return [self._close()] if self._entries else []

    def _close(self) -> Window[T]:
        window = Window(
            entries=self._entries,
            lengths=self._lengths,
            batches=plan_batches(self._lengths, self.policy, sort=self.policy.sorting),
            opened_at=self._opened_at or 0.0,
        )
        self._entries, self._lengths = [], []
        self._model_count, self._longest, self._opened_at = 0, 0, None
        return window
