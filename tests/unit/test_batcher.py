from worker.batcher import Batcher, BatchPolicy, cut_in_order, plan_batches


def plan_padded(batches, lengths):
    return sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)


def unsorted(max_size=4, max_tokens=1000, max_wait_ms=100):
    return BatchPolicy(max_size=max_size, max_tokens=max_tokens, max_wait_ms=max_wait_ms, sort_window=1)


def test_window_closes_at_max_size():
    batcher = Batcher(unsorted(max_size=3))
    assert batcher.add("a", 5, now=0.0) == []
    assert batcher.add("b", 5, now=0.0) == []
    [window] = batcher.add("c", 5, now=0.0)
    assert window.entries == ["a", "b", "c"]
    assert window.batches == [[0, 1, 2]]
    assert len(batcher) == 0 and batcher.deadline() is None


def test_window_closes_before_padded_cost_exceeds_max_tokens():
    # Padded cost is longest × count: 10×2=20 fits, 30×3=90 does not fit in 50.
    batcher = Batcher(unsorted(max_size=10, max_tokens=50))
    assert batcher.add("a", 10, now=0.0) == []
    assert batcher.add("b", 8, now=0.0) == []
    [window] = batcher.add("c", 30, now=0.0)
    assert window.entries == ["a", "b"]
    assert window.padded_tokens() == 20
    assert len(batcher) == 1  # "c" opened the next window


def test_window_closes_after_max_wait_from_first_event():
    batcher = Batcher(unsorted(max_wait_ms=100))
    batcher.add("a", 5, now=10.0)
    batcher.add("b", 5, now=10.05)
    assert batcher.deadline() == 10.1
    assert batcher.poll(now=10.099) == []
    [window] = batcher.poll(now=10.1)
    assert window.entries == ["a", "b"]
    assert batcher.deadline() is None


def test_a_model_with_no_window_waiting_takes_the_open_window_at_once_when_close_when_idle():
    policy = BatchPolicy(max_size=4, max_tokens=1000, max_wait_ms=100, sort_window=64, close_when_idle=True)
    batcher = Batcher(policy)
    batcher.add("a", 5, now=10.0)
    batcher.add("b", 7, now=10.01)
    # Busy model: the window keeps its wait (and keeps filling).
    assert batcher.poll(now=10.02, model_wants_window=False) == []
    [window] = batcher.poll(now=10.02, model_wants_window=True)
    assert window.entries == ["a", "b"]
    assert batcher.poll(now=10.03, model_wants_window=True) == []  # nothing open, nothing closed


def test_without_close_when_idle_the_open_window_waits_out_max_wait():
    batcher = Batcher(BatchPolicy(max_size=4, max_tokens=1000, max_wait_ms=100, sort_window=1, close_when_idle=False))
    batcher.add("a", 5, now=10.0)
    assert batcher.poll(now=10.05, model_wants_window=True) == []
    assert len(batcher.poll(now=10.1, model_wants_window=True)) == 1


def test_zero_wait_closes_on_first_poll():
    batcher = Batcher(unsorted(max_wait_ms=0))
    batcher.add("a", 5, now=1.0)
    assert len(batcher.poll(now=1.0)) == 1


def test_rejected_entries_ride_along_in_order_without_counting():
    batcher = Batcher(unsorted(max_size=2))
    batcher.add("a", 5, now=0.0)
    assert batcher.add("bad", None, now=0.0) == []
    [window] = batcher.add("b", 7, now=0.0)
    assert window.entries == ["a", "bad", "b"]
    assert window.batches == [[0, 2]]
    assert window.model_events == 2
    assert window.real_tokens() == 12


def test_a_window_of_only_rejected_entries_closes_on_time():
    batcher = Batcher(unsorted(max_wait_ms=10))
    batcher.add("bad", None, now=0.0)
    [window] = batcher.poll(now=0.02)
    assert window.batches == []


def test_flush_closes_open_window():
    batcher = Batcher(unsorted())
    assert batcher.flush() == []
    batcher.add("a", 3, now=0.0)
    [window] = batcher.flush()
    assert window.entries == ["a"]


def test_sorted_window_groups_similar_lengths_and_keeps_entries_in_order():
    policy = BatchPolicy(max_size=2, max_tokens=1000, max_wait_ms=100, sort_window=6)
    batcher = Batcher(policy)
    lengths = [50, 3, 48, 4, 51, 5]
    closed = []
    for i, length in enumerate(lengths):
        closed += batcher.add(i, length, now=0.0)
    [window] = closed
    assert window.entries == [0, 1, 2, 3, 4, 5]
    # Shortest first, pairs of similar lengths.
    assert window.batches == [[1, 3], [5, 2], [0, 4]]
    assert window.padded_tokens() == 4 * 2 + 48 * 2 + 51 * 2


def test_sorting_cuts_padding_against_arrival_order():
    lengths = [8, 200, 9, 180, 7, 190, 10, 170]
    policy = BatchPolicy(max_size=2, max_tokens=10_000, max_wait_ms=0, sort_window=8)
    def padded(batches):
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert padded(plan_batches(lengths, policy, sort=True)) < padded(plan_batches(lengths, policy, sort=False)) * 0.6


def test_plan_respects_max_tokens_and_max_size():
    lengths = [100, 100, 100, 10, 10, 10, 10, 10]
    policy = BatchPolicy(max_size=4, max_tokens=250, max_wait_ms=0, sort_window=8)
    batches = plan_batches(lengths, policy, sort=True)
    for batch in batches:
        assert len(batch) <= 4
        assert max(lengths[i] for i in batch) * len(batch) <= 250
    assert sorted(i for b in batches for i in b) == list(range(8))


def test_an_entry_longer_than_max_tokens_gets_a_batch_of_its_own():
    policy = BatchPolicy(max_size=4, max_tokens=50, max_wait_ms=0, sort_window=1)
    assert plan_batches([10, 80, 10], policy, sort=False) == [[0], [1], [2]]


def test_only_a_window_of_one_turns_sorting_off():
    assert not BatchPolicy(max_size=64, sort_window=1).sorting
    assert BatchPolicy(max_size=64, sort_window=65).sorting
    # A GPU-sized max_size with the default window still sorts (seen: padding 6.3 unsorted).
    policy = BatchPolicy(max_size=512, max_tokens=32768, max_wait_ms=0, sort_window=512, pass_overhead_tokens=64)
    assert policy.sorting
    lengths = [256 if i % 100 == 0 else 10 for i in range(512)]
    batcher = Batcher(policy)
    windows = [w for i, length in enumerate(lengths) for w in batcher.add(i, length, 0.0)]
    assert len(windows) == 1 and windows[0].model_events == 512
    assert windows[0].padded_tokens() < 1.5 * windows[0].real_tokens()
    assert windows[0].padded_tokens() < plan_padded(cut_in_order(list(range(512)), lengths, policy), lengths) / 3


def _cost(batches, lengths, overhead):
    return sum(max(lengths[i] for i in b) * len(b) + overhead for b in batches)


def _brute_force_best(sizes, policy):
    """Least cost over every way of cutting the sorted sizes into contiguous batches."""
    from functools import lru_cache

    @lru_cache(maxsize=None)
    def best(end):
        if end == 0:
            return 0
        options = []
        for first in range(end):
            rows = end - first
            if rows <= policy.max_size and (sizes[end - 1] * rows <= policy.max_tokens or rows == 1):
                options.append(best(first) + sizes[end - 1] * rows + policy.pass_overhead_tokens)
        return min(options)

    return best(len(sizes))


def test_sorted_plan_has_the_least_cost_within_the_limits():
    import random

    rng = random.Random(5)
    for _ in range(200):
        lengths = [rng.choice([3, 5, 8, 20, 40, 90, 250]) + rng.randint(0, 5) for _ in range(rng.randint(1, 12))]
        policy = BatchPolicy(max_size=rng.randint(1, 6), max_tokens=rng.choice([300, 600, 5000]), max_wait_ms=0,
                             sort_window=64, pass_overhead_tokens=rng.choice([0, 10, 70, 500]))
        batches = plan_batches(lengths, policy, sort=True)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        for batch in batches:
            assert len(batch) <= policy.max_size
            assert len(batch) == 1 or max(lengths[i] for i in batch) * len(batch) <= policy.max_tokens
        assert _cost(batches, lengths, policy.pass_overhead_tokens) == _brute_force_best(tuple(sorted(lengths)), policy)


def test_a_long_text_does_not_share_a_batch_just_because_there_is_room():
    lengths = [20] * 15 + [250]
    policy = BatchPolicy(max_size=16, max_tokens=10_000, max_wait_ms=0, sort_window=64, pass_overhead_tokens=64)
    assert plan_batches(lengths, policy, sort=True) == [list(range(15)), [15]]


def test_a_large_pass_overhead_prefers_fewer_larger_batches():
    lengths = [10, 12, 30, 32]
    cheap = BatchPolicy(max_size=4, max_tokens=1000, max_wait_ms=0, sort_window=8, pass_overhead_tokens=5)
    dear = BatchPolicy(max_size=4, max_tokens=1000, max_wait_ms=0, sort_window=8, pass_overhead_tokens=1000)
    assert plan_batches(lengths, cheap, sort=True) == [[0, 1], [2, 3]]
    assert plan_batches(lengths, dear, sort=True) == [[0, 1, 2, 3]]


def least_cost_cuts_by_the_book(lengths, policy):
    """The least-cost cut written as the plain dynamic programme, to hold the fast one to."""
    order = sorted((i for i, length in enumerate(lengths) if length is not None), key=lambda i: lengths[i])
    sizes = [lengths[i] for i in order]
    best = [0.0] + [float("inf")] * len(sizes)
    start = [0] * (len(sizes) + 1)
    for end in range(1, len(sizes) + 1):
        longest = sizes[end - 1]
        rows = max(1, min(policy.max_size, policy.max_tokens // max(1, longest), end))
        for first in range(end - rows, end):
            cost = best[first] + longest * (end - first) + policy.pass_overhead_tokens
            if cost < best[end]:
                best[end], start[end] = cost, first
    batches = []
    end = len(sizes)
    while end > 0:
        batches.append(order[start[end] : end])
        end = start[end]
    return batches[::-1]


def test_least_cost_cuts_match_the_plain_dynamic_programme_on_random_windows():
    import random

    rng = random.Random(13)
    for _ in range(300):
        policy = BatchPolicy(
            max_size=rng.choice([1, 2, 7, 16, 64, 256]),
            max_tokens=rng.choice([64, 512, 4096, 65536]),
            sort_window=2048,
            pass_overhead_tokens=rng.choice([0, 8, 64, 500]),
        )
        lengths = [rng.choice([None, *range(1, 300)]) if rng.random() < 0.1 else rng.randint(1, 300)
                   for _ in range(rng.randint(0, 400))]
        assert plan_batches(lengths, policy, sort=True) == least_cost_cuts_by_the_book(lengths, policy)
        # Many texts of a few sizes: runs of equal sizes longer than a batch may hold.
        repeated = [rng.choice([None, 1, 2, 3, 9, 40, 41, 250]) for _ in range(rng.randint(0, 400))]
        assert plan_batches(repeated, policy, sort=True) == least_cost_cuts_by_the_book(repeated, policy)


def test_add_all_closes_the_same_windows_as_adding_one_at_a_time():
    import random

    rng = random.Random(3)
    for policy in (BatchPolicy(max_size=4, max_tokens=64, sort_window=5), unsorted(max_size=3, max_tokens=40)):
        one_by_one, chunked = Batcher(policy), Batcher(policy)
        expected, got = [], []
        for chunk_number in range(40):
            entries = [f"{chunk_number}-{i}" for i in range(rng.randrange(0, 13))]
            # Rejected entries (no length) ride along, also first and last in a chunk.
            lengths = [None if rng.random() < 0.2 else rng.randrange(1, 30) for _ in entries]
            now = chunk_number * 0.01
            for entry, length in zip(entries, lengths):
                expected += one_by_one.add(entry, length, now)
            got += chunked.add_all(entries, lengths, now)
            assert len(chunked) == len(one_by_one) and chunked.deadline() == one_by_one.deadline()
        expected += one_by_one.flush()
        got += chunked.flush()
        assert [(w.entries, w.lengths, w.batches, w.opened_at) for w in got] == [
            (w.entries, w.lengths, w.batches, w.opened_at) for w in expected
        ]
        assert len(got) > 5
