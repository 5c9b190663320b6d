import threading

from worker.offsets import OffsetTracker


def test_commits_only_the_finished_prefix():
    tracker = OffsetTracker()
    entries = [tracker.track("t", 0, offset) for offset in range(5)]
    for entry in entries:
        tracker.expect(entry, 2)
    tracker.ack(entries[0])
    tracker.ack(entries[0])
    tracker.ack(entries[2])
    tracker.ack(entries[2])
    assert tracker.committable() == {("t", 0): 1}
    tracker.ack(entries[1])
    assert tracker.committable() == {("t", 0): 1}  # one of two outputs is not enough
    tracker.ack(entries[1])
    assert tracker.committable() == {("t", 0): 3}
    assert tracker.open_count() == 2


def test_ack_reports_when_a_record_finishes():
    tracker = OffsetTracker()
    entry = tracker.track("t", 0, 7)
    assert tracker.expect(entry, 2) is False
    assert tracker.ack(entry) is False
    assert tracker.ack(entry) is True


def test_acks_that_arrive_while_outputs_are_still_being_produced():
    tracker = OffsetTracker()
    entry = tracker.track("t", 0, 0)
    tracker.expect(entry, 2)
    tracker.ack(entry)
    assert tracker.committable() == {}
    tracker.ack(entry)
    assert tracker.committable() == {("t", 0): 1}


def test_record_with_no_outputs_finishes_at_expect():
    tracker = OffsetTracker()
    entry = tracker.track("t", 1, 41)
    assert tracker.expect(entry, 0) is True
    assert tracker.committable() == {("t", 1): 42}


def test_partitions_are_independent_and_offsets_may_have_gaps():
    tracker = OffsetTracker()
    a = tracker.track("t", 0, 10)
    b = tracker.track("t", 1, 3)
    c = tracker.track("t", 0, 14)  # compacted topic: offsets 11-13 never arrive
    for entry in (a, b, c):
        tracker.expect(entry, 0)
    assert tracker.committable() == {("t", 0): 15, ("t", 1): 4}


def test_mark_committed_hides_unchanged_partitions_until_a_commit_fails():
    tracker = OffsetTracker()
    tracker.expect(tracker.track("t", 0, 0), 0)
    offsets = tracker.committable()
    tracker.mark_committed(offsets)
    assert tracker.committable() == {}
    assert tracker.committable(include_committed=True) == {("t", 0): 1}
    tracker.unmark_committed([("t", 0)])
    assert tracker.committable() == {("t", 0): 1}


def test_forget_drops_partitions_and_ignores_late_acks():
    tracker = OffsetTracker()
    entry = tracker.track("t", 0, 0)
    tracker.track("t", 1, 0)
    tracker.expect(entry, 1)
    assert tracker.forget([("t", 0)]) == 1
    assert tracker.open_count() == 1
    assert tracker.ack(entry) is False
    assert tracker.open_count() == 1
    assert ("t", 0) not in tracker.committable(include_committed=True)


def test_concurrent_acks_are_counted_exactly():
    tracker = OffsetTracker()
    entries = [tracker.track("t", 0, offset) for offset in range(2000)]
    for entry in entries:
        tracker.expect(entry, 4)

    def ack_all():
        for entry in entries:
            tracker.ack(entry)

    threads = [threading.Thread(target=ack_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tracker.open_count() == 0
    assert tracker.committable() == {("t", 0): 2000}
