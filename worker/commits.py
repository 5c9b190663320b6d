"""Commit coordination: when a window's outputs count as durable, and how input offsets are committed.

One interface, two protocols (`commit_protocol` picks one from the settings):

- `AtLeastOnceCommits`: a window's outputs are produced with one delivery counter per window; once
  the broker has acknowledged every one, its records are finished in the tracker. The poll thread
  commits what the tracker says is finished: every `commit_interval_ms`, each time the worker
  catches up, and synchronously before partitions are handed over or the worker stops.
- `TransactionalCommits`: each window's outputs and its input offsets are committed in one Kafka
  transaction on the publish thread; the poll thread has nothing to commit.

The publisher renders and produces; the poll loop drains and hands partitions over; neither knows
which protocol runs. Never raises inside a librdkafka callback: failures go to `FirstFailure`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from worker.entries import Entry
from worker.errors import DeliveryError, FirstFailure, WorkerError
from worker.metrics import WorkerMetrics
from worker.offsets import OffsetTracker
from worker.settings import DeliveryMode, WorkerSettings

log = logging.getLogger(__name__)

TRANSACTION_ATTEMPTS = 5
TRANSACTION_TIMEOUT_S = 60.0
# A commit before a handover is retried while the group settles (a rebalance in progress, a
# coordinator moving): giving the partitions away uncommitted would have their next owner redo them.
HANDOVER_COMMIT_ATTEMPTS = 5
HANDOVER_RETRY_S = 0.2

# A row of a rendered window: its entry first, then why it was rejected (None: it was not), then
# whatever else the publisher needs to produce it.
Row = tuple[Any, ...]
DeliveryCallback = Callable[[Any, Any], None]
# Produces the given rows' outputs, each with the delivery callback (None: no per-record report).
Produce = Callable[[Sequence[Row], DeliveryCallback | None], None]
# Told the rows whose outputs are all durable, once per window (for metrics).
Finished = Callable[[Sequence[Row]], None]


class Commits(Protocol):
    # -- the publish thread --
    def deliver(self, rows: Sequence[Row], outputs: int, produce: Produce, finished: Finished) -> None:
        """Produce a window's rows (`outputs` records in all) and finish their entries once durable."""

    # -- the poll thread (the consumer is not thread-safe) --
    def consumer_config(self) -> dict[str, Any]:
        """Callbacks and options this protocol needs on the consumer."""

    def start(self, producer: Any) -> None:
        """Before the first window is published."""

    def note_rebalance(self, consumer: Any) -> None:
        """From each rebalance callback, before anything is committed in it."""

    def commit_if_due(self, consumer: Any) -> None:
        """Once a poll-loop turn."""

    def commit_now(self, consumer: Any, handover: bool) -> None:
        """Synchronously commit everything finished: before partitions are given away (`handover`),
        or as the worker stops."""


def commit_protocol(settings: WorkerSettings, tracker: OffsetTracker, failure: FirstFailure, metrics: WorkerMetrics) -> Commits:
    if settings.delivery.mode is DeliveryMode.EXACTLY_ONCE:
        return TransactionalCommits(tracker, metrics)
    return AtLeastOnceCommits(tracker, failure, metrics, settings.delivery.commit_interval_ms / 1000)


def _finish(tracker: OffsetTracker, rows: Sequence[Row], finished: Finished) -> None:
    """Every output of these rows is durable: their offsets may be committed."""
    tracker.finish([row[0].offset for row in rows])
    finished(rows)


class AtLeastOnceCommits:
    def __init__(
        self,
        tracker: OffsetTracker,
        failure: FirstFailure,
        metrics: WorkerMetrics,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.tracker = tracker
        self.failure = failure
        self.metrics = metrics
        self.interval_s = interval_s
        self.clock = clock
        self.sleep = sleep
        self._last_commit = 0.0
        self._caught_up = True  # nothing consumed yet: nothing to commit

    # -- the publish thread --------------------------------------------------------------------

    def deliver(self, rows: Sequence[Row], outputs: int, produce: Produce, finished: Finished) -> None:
        # Counted before anything is produced: a report may arrive while the window is still produced.
        delivery = WindowDelivery(self, rows, outputs, finished)
        produce(rows, delivery.delivered)
        if outputs == 0:
            self.finish(rows, finished)

    def finish(self, rows: Sequence[Row], finished: Finished) -> None:
        _finish(self.tracker, rows, finished)

    def undelivered(self, rows: Sequence[Row], error: Any, message: Any) -> None:
        self.metrics.delivery_errors.add(1, {"topic": message.topic()})
        first, last = rows[0][0].source, rows[-1][0].source
        self.failure.record(
            DeliveryError(
                f"an output record (key {message.key()!r}) of the window {first.default_id()} … "
                f"{last.default_id()} was not delivered to {message.topic()!r}: {error.str()}"
            )
        )

    # -- the poll thread -----------------------------------------------------------------------

    def consumer_config(self) -> dict[str, Any]:
        return {"on_commit": self.on_commit}

    def start(self, producer: Any) -> None:
        pass

    def note_rebalance(self, consumer: Any) -> None:
        pass

    def commit_if_due(self, consumer: Any) -> None:
        """Every interval, and once each time the worker catches up (every record it consumed is
        finished): then the group's lag reads zero at once, instead of up to an interval later, and
        a restart in that gap would redeliver nothing."""
        caught_up = self.tracker.open_count() == 0
        if self.clock() - self._last_commit >= self.interval_s or (caught_up and not self._caught_up):
            self._commit(consumer, sync=False)
        self._caught_up = caught_up

    def commit_now(self, consumer: Any, handover: bool) -> None:
        attempts = HANDOVER_COMMIT_ATTEMPTS if handover else 1
        for attempt in range(1, attempts + 1):
            error = self._commit(consumer, sync=True, quiet=attempt < attempts)
            if error is None or not _retriable(error):
                return
            log.info("commit before handover failed, retrying", extra={"attempt": attempt, "error": error.str()})
            self.sleep(HANDOVER_RETRY_S * attempt)

    def _commit(self, consumer: Any, sync: bool, quiet: bool = False) -> KafkaError | None:
        """Returns the error of a synchronous commit that failed."""
        self._last_commit = self.clock()
        offsets = self.tracker.committable(include_committed=sync)
        if not offsets:
            return None
        partitions = [TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()]
        try:
            results = consumer.commit(offsets=partitions, asynchronous=not sync)
        except Exception as exc:  # noqa: BLE001 - nothing marked committed: the next commit offers it again
            reported = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
            error = reported if isinstance(reported, KafkaError) else KafkaError(KafkaError._FAIL, repr(exc))
            return self._failed(error, quiet)
        if sync:
            # A synchronous commit reports partitions that failed in its result, without raising.
            failed = [tp for tp in results or () if tp.error is not None]
            if failed:
                done = {(tp.topic, tp.partition) for tp in results if tp.error is None}
                self.tracker.mark_committed({key: offsets[key] for key in done if key in offsets})
                return self._failed(failed[0].error, quiet)
            self.metrics.commits.add(1, {"result": "ok"})
        self.tracker.mark_committed(offsets)
        return None

    def _failed(self, error: KafkaError, quiet: bool) -> KafkaError:
        if not quiet:
            self.metrics.commits.add(1, {"result": "failed"})
            log.warning("commit failed", extra={"error": error.str()})
        return error

    def on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's report of an asynchronous commit (served inside the poll)."""
        failed = [(tp.topic, tp.partition) for tp in partitions if tp.error is not None]
        if error is not None or failed:
            self.metrics.commits.add(1, {"result": "failed"})
            self.tracker.unmark_committed(failed or [(tp.topic, tp.partition) for tp in partitions])
            log.warning("commit failed", extra={"error": error.str() if error else str(partitions[0].error)})
        else:
            self.metrics.commits.add(1, {"result": "ok"})


def _retriable(error: KafkaError) -> bool:
    """Worth another try before a handover: the group is between generations, or its coordinator
    is busy or moving. In a revoke callback the partitions are still this worker's (no one gets them
    before it returns), so a commit that carried the generation before the current one may be sent
    again with the current one."""
    return error.retriable() or error.code() in (
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError._TIMED_OUT,
        KafkaError.REQUEST_TIMED_OUT,
    )


class WindowDelivery:
    """Counts one window's delivery reports (served on the publish thread by `producer.poll`):
    one bound method is the callback of all its outputs, with no object, lock or partial per record."""

    __slots__ = ("commits", "rows", "remaining", "failed", "finished")

    def __init__(self, commits: AtLeastOnceCommits, rows: Sequence[Row], outputs: int, finished: Finished) -> None:
        self.commits = commits
        self.rows = rows
        self.remaining = outputs
        self.failed = False
        self.finished = finished

    def delivered(self, error: Any, message: Any) -> None:
        """librdkafka's delivery callback for every output of the window; never raises."""
        if error is not None:
            self.failed = True  # the window is never finished: nothing past it is committed
            self.commits.undelivered(self.rows, error, message)
            return
        self.remaining -= 1
        if self.remaining == 0 and not self.failed:
            self.commits.finish(self.rows, self.finished)


class TransactionalCommits:
    def __init__(self, tracker: OffsetTracker, metrics: WorkerMetrics) -> None:
        self.tracker = tracker
        self.metrics = metrics
        self.producer: Any = None
        # The consumer's group metadata, read on the poll thread at each rebalance. The publish
        # thread must not ask the consumer itself: that call waits until no other thread is inside
        # consume(), which the poll loop hardly ever allows (seen: a transaction stuck for minutes).
        self._group_metadata: Any = None

    # -- the publish thread --------------------------------------------------------------------

    def deliver(self, rows: Sequence[Row], outputs: int, produce: Produce, finished: Finished) -> None:
        producer = self.producer
        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            # After a rebalance (the usual cause of an aborted transaction) the partitions this worker
            # lost are another worker's, which resumes them from their committed offset: leave them out.
            rows = [row for row in rows if not row[0].offset.forgotten]
            if not rows:
                return
            try:
                producer.begin_transaction()
                produce(rows, None)
                producer.send_offsets_to_transaction(
                    _next_offsets([row[0] for row in rows]), self._group_metadata, TRANSACTION_TIMEOUT_S
                )
                self._commit_transaction()
                break
            except KafkaException as exc:
                error = exc.args[0]
                if error.fatal() or not error.txn_requires_abort() or attempt == TRANSACTION_ATTEMPTS:
                    self.metrics.commits.add(1, {"result": "failed"})
                    raise WorkerError(f"transaction failed, stopping: {error.str()}") from exc
                log.warning("transaction aborted, retrying", extra={"attempt": attempt, "error": error.str()})
                producer.abort_transaction(TRANSACTION_TIMEOUT_S)
                time.sleep(min(2.0, 0.1 * 2**attempt))
        self.metrics.commits.add(1, {"result": "ok"})
        _finish(self.tracker, rows, finished)

    def _commit_transaction(self) -> None:
        while True:
            try:
                self.producer.commit_transaction(TRANSACTION_TIMEOUT_S)
                return
            except KafkaException as exc:
                if exc.args[0].retriable():
                    continue
                raise

    # -- the poll thread -----------------------------------------------------------------------

    def consumer_config(self) -> dict[str, Any]:
        return {}

    def start(self, producer: Any) -> None:
        self.producer = producer
        producer.init_transactions(TRANSACTION_TIMEOUT_S)

    def note_rebalance(self, consumer: Any) -> None:
        """A rebalance may start a new group generation: transactions must carry the current one."""
        self._group_metadata = consumer.consumer_group_metadata()

    def commit_if_due(self, consumer: Any) -> None:
        pass  # offsets are committed with each window's transaction

    def commit_now(self, consumer: Any, handover: bool) -> None:
        pass


def _next_offsets(entries: list[Entry]) -> list[TopicPartition]:
    """The offsets to commit with these entries' outputs: one past the last entry of each partition."""
    positions: dict[tuple[str, int], int] = {}
    for entry in entries:
        key = (entry.source.topic, entry.source.partition)
        positions[key] = max(positions.get(key, -1), entry.source.offset + 1)
    return [TopicPartition(topic, partition, offset) for (topic, partition), offset in positions.items()]
