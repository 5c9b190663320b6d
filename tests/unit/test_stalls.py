from worker.stalls import FetchProgress, StallDetector, fetch_progress

P0 = ("in", 0)
P1 = ("in", 1)


def test_waiting_records_are_those_past_the_fetch_position():
    assert FetchProgress(position=10, end=15).waiting == 5
    assert FetchProgress(position=15, end=15).waiting == 0
    assert FetchProgress(position=-1001, end=15).waiting is None  # not known yet: no claim
    assert FetchProgress(position=3, end=-1).waiting is None


def test_progress_is_read_from_librdkafka_statistics_preferring_the_last_stable_offset():
    stats = {
        "topics": {
            "in": {
                "partitions": {
                    "0": {"next_offset": 0, "ls_offset": 50, "hi_offset": 52, "app_offset": -1001},
                    "1": {"next_offset": 7, "ls_offset": -1, "hi_offset": 9, "app_offset": 5},
                    "2": {"next_offset": -1001, "committed_offset": 4, "ls_offset": 9},
                    "-1": {"next_offset": -1001},
                }
            }
        }
    }
    assert fetch_progress(stats) == {
        P0: FetchProgress(0, 50, -1001), P1: FetchProgress(7, 9, 5), ("in", 2): FetchProgress(4, 9)
    }


def test_a_watched_partition_with_records_waiting_and_no_progress_stalls_after_the_timeout():
    detector = StallDetector(timeout_s=60)
    stuck = {P0: FetchProgress(0, 504)}
    assert detector.observe(0.0, stuck, {P0}) == []
    assert detector.observe(60.0, stuck, {P0}) == []
    [stall] = detector.observe(61.0, stuck, {P0})
    assert (stall.topic, stall.partition, stall.waiting, stall.seconds) == ("in", 0, 504, 61.0)
    assert "in:0" in stall.reason() and "504 records waiting" in stall.reason()


def test_a_moving_partition_never_stalls():
    detector = StallDetector(timeout_s=10)
    for second in range(0, 100, 5):
        assert detector.observe(float(second), {P0: FetchProgress(second, second + 1000)}, {P0}) == []


def test_a_paused_partition_is_not_watched_and_its_clock_restarts_when_resumed():
    detector = StallDetector(timeout_s=10)
    stuck = {P0: FetchProgress(0, 100)}
    detector.observe(0.0, stuck, {P0})
    assert detector.observe(50.0, stuck, set()) == []  # paused by the worker: not a stall
    assert detector.observe(55.0, stuck, {P0}) == []  # resumed: a whole timeout from now
    assert detector.observe(65.0, stuck, {P0}) == []
    assert len(detector.observe(66.0, stuck, {P0})) == 1


def test_an_idle_partition_that_receives_records_is_not_a_stall_at_once():
    detector = StallDetector(timeout_s=10)
    detector.observe(0.0, {P0: FetchProgress(5, 5)}, {P0})
    detector.observe(500.0, {P0: FetchProgress(5, 5)}, {P0})  # caught up for a long time
    assert detector.observe(505.0, {P0: FetchProgress(5, 8)}, {P0}) == []  # records just arrived
    assert detector.observe(520.0, {P0: FetchProgress(5, 8)}, {P0}) != []  # and stayed unfetched


def test_only_the_stuck_partition_is_reported():
    detector = StallDetector(timeout_s=10)
    detector.observe(0.0, {P0: FetchProgress(0, 9), P1: FetchProgress(0, 9)}, {P0, P1})
    stalls = detector.observe(20.0, {P0: FetchProgress(0, 9), P1: FetchProgress(4, 9)}, {P0, P1})
    assert [(s.topic, s.partition) for s in stalls] == [P0]


def test_a_partition_never_fetched_has_its_end_asked_for_once_its_clock_has_run_out():
    asked = []

    def find_end(key):
        asked.append(key)
        return 20

    detector = StallDetector(timeout_s=10)
    never_fetched = {P0: FetchProgress(0, -1001)}
    assert detector.observe(0.0, never_fetched, {P0}, find_end) == []
    assert detector.observe(9.0, never_fetched, {P0}, find_end) == [] and asked == []  # no query before the timeout
    [stall] = detector.observe(11.0, never_fetched, {P0}, find_end)
    assert asked == [P0] and stall.waiting == 20


def test_a_never_fetched_partition_that_is_empty_is_not_a_stall():
    detector = StallDetector(timeout_s=10)
    detector.observe(0.0, {P0: FetchProgress(0, -1)}, {P0}, lambda key: 0)
    assert detector.observe(30.0, {P0: FetchProgress(0, -1)}, {P0}, lambda key: 0) == []
    assert detector.observe(30.0, {P0: FetchProgress(0, -1)}, {P0}, lambda key: -1) == []  # broker did not answer


def test_a_partition_whose_prefetched_records_are_still_being_consumed_is_not_a_stall():
    """Under back-pressure librdkafka stops fetching while its queue is full, but the worker keeps
    taking records from it: the fetch position stands still, the consumed one moves."""
    detector = StallDetector(timeout_s=10)
    for second in range(0, 100, 5):
        report = {P0: FetchProgress(position=5000, end=90_000, consumed=1000 + second)}
        assert detector.observe(float(second), report, {P0}) == []
    stuck = {P0: FetchProgress(position=5000, end=90_000, consumed=1095)}  # as at second 95
    assert detector.observe(105.0, stuck, {P0}) == []
    assert len(detector.observe(106.0, stuck, {P0})) == 1  # neither has moved for over the timeout
