"""The pauser against a consumer that, like librdkafka, keeps each partition's pause flag across
unassignment and reassignment (the real client is exercised in tests/integration/test_pausing.py)."""

from confluent_kafka import TopicPartition

from worker.pausing import PartitionPauser, PauseTimer


class FlagKeepingConsumer:
    def __init__(self) -> None:
        self.assigned: set[tuple[str, int]] = set()
        self.flags: set[tuple[str, int]] = set()  # survives unassignment, as librdkafka's does

    def assign(self, keys):
        self.assigned |= set(keys)

    def unassign(self, keys):
        self.assigned -= set(keys)

    def pause(self, partitions):
        self.flags |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions):
        self.flags -= {(tp.topic, tp.partition) for tp in partitions}

    def fetching(self):
        return self.assigned - self.flags


def tps(*partitions):
    return [TopicPartition("in", p) for p in partitions]


def rebalance_in(consumer, pauser, *partitions):
    pauser.assigned(tps(*partitions))
    consumer.assign({("in", p) for p in partitions})
    pauser.settle()  # after poll returns


def test_a_partition_lost_while_paused_and_regained_after_a_resume_is_fetched():
    consumer = FlagKeepingConsumer()
    pauser = PartitionPauser(consumer)
    rebalance_in(consumer, pauser, 0, 1)
    pauser.hold()
    assert consumer.fetching() == set()
    pauser.removed(tps(0, 1))
    consumer.unassign({("in", 0), ("in", 1)})
    pauser.release()
    rebalance_in(consumer, pauser, 0, 1)
    assert consumer.fetching() == {("in", 0), ("in", 1)}


def test_a_partition_assigned_under_back_pressure_is_paused_and_resumed_with_the_rest():
    changes = []
    consumer = FlagKeepingConsumer()
    pauser = PartitionPauser(consumer, on_change=lambda assigned, paused: changes.append((assigned, paused)))
    rebalance_in(consumer, pauser, 0)
    pauser.hold()
    rebalance_in(consumer, pauser, 1)
    assert consumer.fetching() == set() and pauser.paused == {("in", 0), ("in", 1)}
    assert changes[-1] == (2, 2)
    pauser.release()
    assert consumer.fetching() == {("in", 0), ("in", 1)} and pauser.active == {("in", 0), ("in", 1)}
    assert changes[-1] == (2, 0)


def test_revoked_partitions_leave_no_pause_flag_behind_and_are_not_resumed_twice():
    consumer = FlagKeepingConsumer()
    pauser = PartitionPauser(consumer)
    rebalance_in(consumer, pauser, 0, 1)
    pauser.hold()
    assert pauser.removed(tps(1)) == {("in", 1)}
    consumer.unassign({("in", 1)})
    assert ("in", 1) not in consumer.flags and pauser.assignment == {("in", 0)}
    assert consumer.fetching() == set()  # partition 0 stays paused: back-pressure is still on
    pauser.release()
    assert consumer.fetching() == {("in", 0)}


def test_the_timer_pauses_only_after_the_model_has_taken_nothing_for_the_whole_wait():
    timer = PauseTimer(pause_after_s=5.0)
    assert not timer.should_pause(100.0)  # nothing held
    timer.holding(100.0)
    timer.holding(103.0)  # more windows held: the clock keeps running from the first
    assert not timer.should_pause(104.9)
    timer.progressed(104.9)  # the model took a window; others still held
    assert not timer.should_pause(109.8)
    assert timer.should_pause(109.9)


def test_the_timer_stops_when_nothing_is_held_and_restarts_with_the_next_hold():
    timer = PauseTimer(pause_after_s=5.0)
    timer.holding(0.0)
    timer.clear()
    assert not timer.should_pause(60.0)
    timer.progressed(60.0)  # a window taken with nothing held does not start the clock
    assert not timer.should_pause(70.0)
    timer.holding(70.0)
    assert timer.should_pause(75.0)


def test_a_zero_wait_pauses_as_soon_as_a_window_is_held():
    timer = PauseTimer(pause_after_s=0.0)
    assert not timer.should_pause(1.0)
    timer.holding(1.0)
    assert timer.should_pause(1.0)
