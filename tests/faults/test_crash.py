"""Kill -9 in the middle of a run, start again: nothing is lost, and only the uncommitted window is repeated."""

from __future__ import annotations

import orjson
import pytest

from tests.support.fault_support import TopicReader, committed_snapshot, duplicates
from tests.support.kafka_support import committed_at_end, end_offsets, json_event, produce, wait_until, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

EVENTS = 4000
BATCH = 32
# The first worker's passes are slowed so that it cannot get through the input before the kill on any
# machine: at most BATCH / KILLED_PASS_S = 640 events/s, so the 4,000 take 6 s or more.
KILLED_PASS_S = 0.05


def test_kill_9_mid_run_then_restart_loses_nothing(bootstrap, worker_topics, tiny_bert_dir, group, spawn):
    topics = worker_topics
    events = [(f"user-{i % 40}".encode(), json_event(f"k{i}", f"event {i} " * (1 + i % 9))) for i in range(EVENTS)]
    produce(bootstrap, topics["input"], events)
    env = worker_env(
        bootstrap, topics, group,
        model__path=tiny_bert_dir, model__max_length=32, batch__max_size=BATCH, batch__max_wait_ms=20,
    )
    wanted = {f"k{i}" for i in range(EVENTS)}
    with TopicReader(bootstrap, topics["labels"]) as labels, TopicReader(bootstrap, topics["embeddings"]) as embeddings:
        first = spawn(env, slow_batch_s=KILLED_PASS_S)
        wait_until(lambda: labels.read() >= EVENTS // 3 or not first.running(), timeout_s=180,
                   what="a third of the outputs")
        assert first.running(), first.logs()[-3000:]
        first.process.kill()  # SIGKILL: no drain, no commit, no goodbye to the group
        first.process.wait()
        committed_at_kill = committed_snapshot(bootstrap, group, topics["input"])
        labels.read_until(0, timeout_s=1, quiet_s=2)  # all that the killed worker got delivered
        outputs_before_restart = len(labels.messages)
        done_at_kill = len(labels.distinct_ids())
        # Killed with work left, or the restart has nothing to recover.
        assert done_at_kill < EVENTS, f"the worker finished all {EVENTS} events before the kill"
        # Outputs written for offsets past the committed position: what a restart must write again.
        uncommitted_window = sum(
            1
            for message in labels.messages
            if (source := orjson.loads(message.value())["source"])["offset"] >= committed_at_kill[source["partition"]]
        )

        second = spawn(env)
        labels.read_until_ids(wanted, timeout_s=180)
        embeddings.read_until_ids(wanted, timeout_s=60)
        ends = end_offsets(bootstrap, topics["input"], EVENTS)
        wait_until(lambda: committed_at_end(bootstrap, group, topics["input"], 3, ends), timeout_s=30,
                   what="committed offsets to reach the end of the input")
        assert second.stop() == 0, second.logs()[-3000:]
        labels.read_until(0, timeout_s=1, quiet_s=2)
        embeddings.read_until(0, timeout_s=1, quiet_s=2)

    repeated = duplicates(labels.messages)
    print(
        f"\nkill -9 after {outputs_before_restart} label records ({done_at_kill} of {EVENTS} events); "
        f"committed at kill: {committed_at_kill}; "
        f"uncommitted window: {uncommitted_window}; duplicated labels after restart: {repeated.total}; "
        f"duplicated embeddings: {duplicates(embeddings.messages).total}"
    )
    # Every input has both outputs...
    assert labels.distinct_ids() == wanted and embeddings.distinct_ids() == wanted
    # ...and only events past the committed offsets at the moment of the kill were processed twice.
    seen: set[str] = set()
    for message in labels.messages:
        record = orjson.loads(message.value())
        if record["id"] in seen:
            source = record["source"]
            committed = committed_at_kill[source["partition"]]
            assert source["offset"] >= committed, f"{record['id']} was committed, then repeated"
        seen.add(record["id"])
    assert repeated.total <= uncommitted_window
