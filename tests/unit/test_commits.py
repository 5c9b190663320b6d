"""The commit protocols, with fake clients: which offsets are committed when, and what a failure does."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from worker.commits import AtLeastOnceCommits, TransactionalCommits
from worker.entries import Entry
from worker.errors import DeliveryError, FirstFailure, WorkerError
from worker.metrics import WorkerMetrics
from worker.offsets import OffsetTracker
from worker.outputs import SourceCoordinates


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Reported:
    """A partition as librdkafka reports it after a commit (TopicPartition's error is read-only)."""

    def __init__(self, topic: str, partition: int, offset: int, error: KafkaError | None = None) -> None:
        self.topic, self.partition, self.offset, self.error = topic, partition, offset, error


class FakeConsumer:
    """Records commits; `failures` are per-partition errors the next synchronous commits report."""

    def __init__(self, failures: list[KafkaError | None] | None = None, raises: KafkaError | None = None) -> None:
        self.commits: list[tuple[dict[tuple[str, int], int], bool]] = []
        self.failures = list(failures or [])
        self.raises = raises

    def commit(self, offsets: list[TopicPartition], asynchronous: bool):  # type: ignore[no-untyped-def]
        if self.raises is not None:
            raise KafkaException(self.raises)
        self.commits.append(({(tp.topic, tp.partition): tp.offset for tp in offsets}, asynchronous))
        if asynchronous:
            return None
        error = self.failures.pop(0) if self.failures else None
        return [Reported(tp.topic, tp.partition, tp.offset, error) for tp in offsets]


def entries(tracker: OffsetTracker, partition: int, offsets: range) -> list[Entry]:
    return [
        Entry(SourceCoordinates("in", partition, offset, None), None, b"{}", None, tracker.track("in", partition, offset))
        for offset in offsets
    ]


def at_least_once(interval_s: float = 0.5):  # type: ignore[no-untyped-def]
    tracker, failure, clock, sleeps = OffsetTracker(), FirstFailure(), Clock(), []
    commits = AtLeastOnceCommits(tracker, failure, WorkerMetrics(), interval_s, clock=clock, sleep=sleeps.append)
    return commits, tracker, failure, clock, sleeps


def test_a_window_is_finished_when_its_last_delivery_report_is_in():
    commits, tracker, _, _, _ = at_least_once()
    window = entries(tracker, 0, range(3))
    reports = []
    finished: list[list[tuple[Entry]]] = []
    rows = [(e,) for e in window]
    commits.deliver(rows, 6, lambda rows, callback: reports.append(callback), finished.append)
    callback = reports[0]
    for _ in range(5):
        callback(None, object())
    assert tracker.open_count() == 3 and finished == []
    callback(None, object())
    assert tracker.open_count() == 0 and finished == [rows]
    assert tracker.committable() == {("in", 0): 3}


def test_a_window_without_outputs_is_finished_at_once():
    commits, tracker, _, _, _ = at_least_once()
    window = entries(tracker, 0, range(2))
    commits.deliver([(e,) for e in window], 0, lambda rows, callback: None, lambda done: None)
    assert tracker.open_count() == 0


class Message:
    def topic(self) -> str:
        return "labels"

    def key(self) -> bytes:
        return b"k"


def test_an_undelivered_output_stops_the_worker_and_its_window_is_never_finished():
    commits, tracker, failure, _, _ = at_least_once()
    window = entries(tracker, 0, range(2))
    reports = []
    commits.deliver([(e,) for e in window], 2, lambda rows, callback: reports.append(callback), lambda done: None)
    reports[0](KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), Message())
    reports[0](None, Message())
    assert isinstance(failure.error, DeliveryError) and "in:0:0" in str(failure.error)
    assert tracker.open_count() == 2 and tracker.committable() == {}


def test_commits_every_interval_and_once_on_catching_up():
    commits, tracker, _, clock, _ = at_least_once(interval_s=0.5)
    consumer = FakeConsumer()
    first = entries(tracker, 0, range(2))
    second = entries(tracker, 0, range(2, 4))
    commits.commit_if_due(consumer)  # at start: due, but nothing finished
    assert consumer.commits == []
    tracker.finish([e.offset for e in first])
    clock.now += 0.1
    commits.commit_if_due(consumer)  # not due, not caught up: the second window is open
    assert consumer.commits == []
    clock.now += 0.5
    commits.commit_if_due(consumer)
    assert consumer.commits == [({("in", 0): 2}, True)]
    tracker.finish([e.offset for e in second])
    clock.now += 0.1
    commits.commit_if_due(consumer)  # caught up: at once, not an interval later
    assert consumer.commits[-1] == ({("in", 0): 4}, True)
    clock.now += 0.1
    commits.commit_if_due(consumer)  # still caught up: once is enough
    assert len(consumer.commits) == 2


def test_a_failed_asynchronous_commit_is_offered_again():
    commits, tracker, _, clock, _ = at_least_once()
    consumer = FakeConsumer()
    tracker.finish([e.offset for e in entries(tracker, 0, range(2))])
    commits.commit_if_due(consumer)
    commits.on_commit(None, [Reported("in", 0, 2, KafkaError(KafkaError.ILLEGAL_GENERATION))])  # type: ignore[list-item]
    clock.now += 1
    commits.commit_if_due(consumer)
    assert [offsets for offsets, _ in consumer.commits] == [{("in", 0): 2}, {("in", 0): 2}]


def test_a_synchronous_commit_whose_partitions_failed_is_not_taken_as_done():
    """librdkafka reports a synchronous commit's per-partition errors in its result, without raising."""
    commits, tracker, _, clock, _ = at_least_once()
    consumer = FakeConsumer(failures=[KafkaError(KafkaError.ILLEGAL_GENERATION)])
    tracker.finish([e.offset for e in entries(tracker, 0, range(2))])
    commits.commit_now(consumer, handover=False)
    clock.now += 1
    commits.commit_if_due(consumer)  # offered again: the first did not commit
    assert [offsets for offsets, _ in consumer.commits] == [{("in", 0): 2}, {("in", 0): 2}]


def test_a_commit_before_a_handover_is_retried_while_the_group_settles():
    commits, tracker, _, _, sleeps = at_least_once()
    consumer = FakeConsumer(failures=[KafkaError(KafkaError.REBALANCE_IN_PROGRESS)] * 2)
    tracker.finish([e.offset for e in entries(tracker, 0, range(2))])
    commits.commit_now(consumer, handover=True)
    assert len(consumer.commits) == 3 and len(sleeps) == 2
    assert tracker.committable() == {}  # the third went through


def test_a_commit_that_cannot_succeed_is_not_retried():
    commits, tracker, _, _, sleeps = at_least_once()
    consumer = FakeConsumer(failures=[KafkaError(KafkaError.UNKNOWN_MEMBER_ID)] * 5)
    tracker.finish([e.offset for e in entries(tracker, 0, range(2))])
    commits.commit_now(consumer, handover=True)
    assert len(consumer.commits) == 1 and sleeps == []


class FakeProducer:
    """A transactional producer whose first `aborts` commits fail with an abortable error."""

    def __init__(self, aborts: int = 0, fatal: bool = False) -> None:
        self.aborts = aborts
        self.fatal = fatal
        self.log: list[str] = []
        self.sent_offsets: list[list[tuple[int, int]]] = []

    def init_transactions(self, timeout: float) -> None:
        self.log.append("init")

    def begin_transaction(self) -> None:
        self.log.append("begin")

    def send_offsets_to_transaction(self, offsets, metadata, timeout) -> None:  # type: ignore[no-untyped-def]
        self.sent_offsets.append([(tp.partition, tp.offset) for tp in offsets])

    def commit_transaction(self, timeout: float) -> None:
        if self.fatal:
            raise KafkaException(KafkaError(KafkaError._FENCED, fatal=True))
        if self.aborts:
            self.aborts -= 1
            raise KafkaException(KafkaError(KafkaError._STATE, txn_requires_abort=True))
        self.log.append("commit")

    def abort_transaction(self, timeout: float) -> None:
        self.log.append("abort")


class FakeGroupConsumer:
    def consumer_group_metadata(self) -> str:
        return "generation-2"


def transactional(producer: FakeProducer):  # type: ignore[no-untyped-def]
    tracker = OffsetTracker()
    commits = TransactionalCommits(tracker, WorkerMetrics())
    commits.start(producer)
    commits.note_rebalance(FakeGroupConsumer())
    return commits, tracker


def test_a_transaction_carries_the_window_outputs_and_its_next_offsets(monkeypatch):
    producer = FakeProducer()
    commits, tracker = transactional(producer)
    window = entries(tracker, 0, range(3)) + entries(tracker, 1, range(7, 9))
    produced = []
    commits.deliver([(e,) for e in window], 5, lambda rows, callback: produced.append((len(rows), callback)), lambda d: None)
    assert produced == [(5, None)]
    assert producer.log == ["init", "begin", "commit"]
    assert producer.sent_offsets == [[(0, 3), (1, 9)]]
    assert tracker.open_count() == 0
    assert commits.consumer_config() == {}


def test_an_aborted_transaction_is_retried_without_the_partitions_lost_meanwhile(monkeypatch):
    monkeypatch.setattr("worker.commits.time.sleep", lambda s: None)
    producer = FakeProducer(aborts=1)
    commits, tracker = transactional(producer)
    window = entries(tracker, 0, range(2)) + entries(tracker, 1, range(2))
    produced = []

    def produce(rows, callback):  # type: ignore[no-untyped-def]
        produced.append([row[0].source.partition for row in rows])
        if len(produced) == 1:
            tracker.forget([("in", 1)])  # the rebalance that aborted the transaction took partition 1

    commits.deliver([(e,) for e in window], 4, produce, lambda d: None)
    assert produced == [[0, 0, 1, 1], [0, 0]]
    assert producer.log == ["init", "begin", "abort", "begin", "commit"]
    assert producer.sent_offsets[-1] == [(0, 2)]


def test_a_fatal_transaction_error_stops_the_worker():
    commits, tracker = transactional(FakeProducer(fatal=True))
    window = entries(tracker, 0, range(2))
    with pytest.raises(WorkerError, match="transaction failed"):
        commits.deliver([(e,) for e in window], 2, lambda rows, callback: None, lambda d: None)
    assert tracker.open_count() == 2
