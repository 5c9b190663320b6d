"""Pause state across reassignment, on the real broker, at the level of the consumer.

librdkafka keeps a partition's pause flag when the partition is unassigned; a worker that resumes
"its current assignment" after losing a paused partition gets it back paused, and fetches nothing
from it again. The worker's `PartitionPauser` sets every assigned partition's state explicitly.
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.support.kafka_support import produce
from worker.pausing import PartitionPauser

pytestmark = pytest.mark.integration

RECORDS = 50


def consumer_for(bootstrap: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 50,
        }
    )


def records_within(consumer: Consumer, seconds: float, wanted: int) -> int:
    count = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and count < wanted:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            count += 1
    return count


def assign(pauser: PartitionPauser, consumer: Consumer, partitions: list[TopicPartition]) -> None:
    """An assignment as a rebalance makes it: the callback, librdkafka's assign, then the poll loop's settle."""
    pauser.assigned(partitions)
    consumer.incremental_assign(partitions)
    pauser.settle()


def first_record(consumer: Consumer) -> None:
    assert records_within(consumer, 30, 1) == 1, "nothing fetched before the pause"


def test_a_partition_paused_unassigned_and_reassigned_flows_again(bootstrap, topic_factory):
    topic = topic_factory("pause", 1)
    produce(bootstrap, topic, [(b"k", b"x%d" % i) for i in range(RECORDS)])
    partition = [TopicPartition(topic, 0, 0)]

    # The cause, on the real client: resuming "the assignment" while the partition is away does not help.
    naive = consumer_for(bootstrap)
    try:
        naive.incremental_assign(partition)
        first_record(naive)
        naive.pause(partition)
        naive.incremental_unassign(partition)
        naive.resume(naive.assignment())  # empty at this moment
        naive.incremental_assign([TopicPartition(topic, 0, 0)])
        assert records_within(naive, 5, RECORDS) == 0, "librdkafka no longer keeps the flag: the test proves less"
    finally:
        naive.close()

    # The worker's way: paused by back-pressure, lost, back-pressure ends, regained: records flow.
    consumer = consumer_for(bootstrap)
    try:
        pauser = PartitionPauser(consumer)
        assign(pauser, consumer, partition)
        first_record(consumer)
        pauser.hold()
        pauser.removed(partition)
        consumer.incremental_unassign(partition)
        pauser.release()
        assign(pauser, consumer, [TopicPartition(topic, 0, 0)])
        assert records_within(consumer, 60, RECORDS) == RECORDS
    finally:
        consumer.close()


def test_a_partition_assigned_under_back_pressure_waits_and_then_flows(bootstrap, topic_factory):
    topic = topic_factory("pause", 2)
    produce(bootstrap, topic, [(None, b"x%d" % i) for i in range(RECORDS)])
    first, second = [TopicPartition(topic, 0, 0)], [TopicPartition(topic, 1, 0)]
    consumer = consumer_for(bootstrap)
    try:
        pauser = PartitionPauser(consumer)
        assign(pauser, consumer, first)
        pauser.hold()
        assign(pauser, consumer, second)
        assert records_within(consumer, 3, 1) == 0, "a partition assigned under back-pressure was fetched"
        pauser.release()
        assert records_within(consumer, 60, RECORDS) == RECORDS
    finally:
        consumer.close()
