import threading

from worker.offsets import OffsetTracker


def test_commits_only_the_finished_prefix():
    tracker = OffsetTracker()
    entries = [tracker.track("t", 0, offset) for offset in range(5)]
    tracker.finish([entries[0], entries[2]])
    assert tracker.committable() == {("t", 0): 1}
    tracker.finish([entries[1]])
    assert tracker.committable() == {("t", 0): 3}
    assert tracker.open_count() == 2


def test_finish_reports_how_many_it_finished_and_counts_each_record_once():
    tracker = OffsetTracker()
    entries = [tracker.track("t", 0, offset) for offset in range(3)]
    assert tracker.finish(entries[:2]) == 2
    assert tracker.finish(entries) == 1  # the first two were finished already
    assert tracker.open_count() == 0
    assert tracker.committable() == {("t", 0): 3}


def test_nothing_is_committable_before_a_window_is_finished():
    tracker = OffsetTracker()
    window = [tracker.track("t", 0, offset) for offset in range(4)]
    assert tracker.committable() == {}
    tracker.finish(window)
    assert tracker.committable() == {("t", 0): 4}


def test_partitions_are_independent_and_offsets_may_have_gaps():
    tracker = OffsetTracker()
    a = tracker.track("t", 0, 10)
    b = tracker.track("t", 1, 3)
    c = tracker.track("t", 0, 14)  # compacted topic: offsets 11-13 never arrive
    tracker.finish([a, b, c])
    assert tracker.committable() == {("t", 0): 15, ("t", 1): 4}


def test_mark_committed_hides_unchanged_partitions_until_a_commit_fails():
    tracker = OffsetTracker()
    tracker.finish([tracker.track("t", 0, 0)])
    offsets = tracker.committable()
    tracker.mark_committed(offsets)
    assert tracker.committable() == {}
    assert tracker.committable(include_committed=True) == {("t", 0): 1}
    tracker.unmark_committed([("t", 0)])
    assert tracker.committable() == {("t", 0): 1}


def test_forget_drops_partitions_and_ignores_late_deliveries():
    tracker = OffsetTracker()
    entry = tracker.track("t", 0, 0)
    tracker.track("t", 1, 0)
    assert tracker.forget([("t", 0)]) == 1
    assert tracker.open_count() == 1
    assert entry.forgotten
    assert tracker.finish([entry]) == 0  # its window's outputs were delivered after the loss
    assert tracker.open_count() == 1
    assert ("t", 0) not in tracker.committable(include_committed=True)


def test_concurrent_finishes_are_counted_exactly():
    tracker = OffsetTracker()
    entries = [tracker.track("t", 0, offset) for offset in range(2000)]

    def finish_windows(start):
        for first in range(start, 2000, 400):
            tracker.finish(entries[first : first + 100])

    threads = [threading.Thread(target=finish_windows, args=(start,)) for start in (0, 100, 200, 300)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tracker.open_count() == 0
    assert tracker.committable() == {("t", 0): 2000}


def test_track_all_tracks_a_chunk_in_order_like_track():
    tracker = OffsetTracker()
    entries = tracker.track_all([("t", 0, 5), ("t", 1, 9), ("t", 0, 6)])
    assert [entry.offset for entry in entries] == [5, 9, 6]
    assert tracker.open_count() == 3
    tracker.finish([entries[0], entries[1]])
    assert tracker.committable() == {("t", 0): 6, ("t", 1): 10}
    tracker.finish([entries[2]])
    assert tracker.committable() == {("t", 0): 7, ("t", 1): 10}
