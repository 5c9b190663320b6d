"""Scale-out and scale-in during a run: three workers share 12 partitions; one leaves, another joins."""

from __future__ import annotations

import signal

import pytest

from tests.support.fault_support import (
    SteadyProducer,
    TopicReader,
    committed_snapshot,
    duplicates,
    lost_partitions,
    messages_logged,
    order_violations,
    owned_partitions,
    repeated_offsets,
)
from tests.support.kafka_support import committed_at_end, end_offsets, wait_until, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

EVENTS = 8000
PARTITIONS = 12


@pytest.fixture
def topics12(worker_topic_set):
    return worker_topic_set(PARTITIONS)


@pytest.mark.parametrize("leave", ["sigterm", "sigkill"])
def test_a_worker_leaves_and_another_joins_mid_run(leave, bootstrap, topics12, tiny_bert_dir, group, spawn):
    topics = topics12
    source = SteadyProducer(bootstrap, topics["input"], EVENTS, rate_per_s=250, keys=60, prefix="r")

    def env(name: str) -> dict[str, str]:
        return worker_env(
            bootstrap, topics, group, delivery__instance_id=name,
            model__path=tiny_bert_dir, model__max_length=32, batch__max_size=32, batch__max_wait_ms=20,
        )

    with TopicReader(bootstrap, topics["labels"]) as labels, TopicReader(bootstrap, topics["embeddings"]) as embeddings:
        workers = {name: spawn(env(name)) for name in ("w1", "w2", "w3")}
        wait_until(lambda: all(owned_partitions(w) for w in workers.values()), timeout_s=120,
                   what="each of three workers to own partitions")
        source.start()
        wait_until(lambda: labels.read() >= EVENTS // 4, timeout_s=120, what="a quarter of the outputs")
        assert all(w.running() for w in workers.values())

        leaving = workers.pop("w1")
        if leave == "sigterm":
            assert leaving.stop(signal.SIGTERM, timeout_s=90) == 0, leaving.logs()[-3000:]
        else:
            leaving.process.kill()
            leaving.process.wait()
        committed_at_leave = committed_snapshot(bootstrap, group, topics["input"])
        assert sum(offset for offset in committed_at_leave.values() if offset > 0) > 0, "nothing committed yet"
        workers["w4"] = spawn(env("w4"))

        source.join(timeout=120)
        assert source.produced == EVENTS and not source.errors
        wanted = source.ids()
        labels.read_until_ids(wanted, timeout_s=180)
        embeddings.read_until_ids(wanted, timeout_s=60)
        ends = end_offsets(bootstrap, topics["input"], EVENTS)
        wait_until(lambda: committed_at_end(bootstrap, group, topics["input"], PARTITIONS, ends), timeout_s=60,
                   what="committed offsets to reach the end of the input")
        for name, worker in workers.items():
            assert worker.running(), f"{name} stopped:\n{worker.logs()[-3000:]}"
        for worker in workers.values():  # all at once: each one's leaving moves partitions to the others
            worker.process.send_signal(signal.SIGTERM)
        for name, worker in workers.items():
            assert worker.wait(timeout_s=90) == 0, f"{name}:\n{worker.logs()[-3000:]}"
        labels.read_until(0, timeout_s=1, quiet_s=2)
        embeddings.read_until(0, timeout_s=1, quiet_s=2)

    repeated = duplicates(labels.messages)
    everyone = [leaving, *workers.values()]
    rebalances = sum(m in ("partitions assigned", "partitions revoked", "partitions lost")
                     for w in everyone for m in messages_logged(w))
    lost = lost_partitions(everyone, topics["input"])
    print(f"\n{leave}: {len(labels.messages)} label records for {EVENTS} events, {repeated.total} duplicated; "
          f"{rebalances} assignment changes logged; partitions lost: {sorted(lost) or 'none'}; "
          f"committed when it left: {sum(v for v in committed_at_leave.values() if v > 0)}")
    assert labels.distinct_ids() == wanted and embeddings.distinct_ids() == wanted
    sequence = lambda event_id: int(event_id[1:])  # noqa: E731 - per key, input order is id order
    assert order_violations(labels.messages, sequence) == {}
    assert order_violations(embeddings.messages, sequence) == {}
    replays = repeated_offsets(labels.messages)
    if leave == "sigterm":
        # A graceful leave drains, waits for deliveries and commits before giving partitions away: nothing
        # handed over is repeated. A partition the broker took from a worker ("partitions lost") is replayed
        # from its last commit. Seen about once in 20 runs on Tansu with 6 s sessions on 2 busy cores: during
        # the rebalance for the joining worker, a member's commit got ILLEGAL_GENERATION and it lost all
        # its partitions; exactly those were repeated, each a short run from its last commit.
        handed_over_and_repeated = {p: offsets for p, offsets in replays.items() if p not in lost}
        assert handed_over_and_repeated == {}, f"duplicated: {repeated.ids[:20]}"
    else:
        # Only what the killed worker had not committed may be processed twice.
        for partition, offsets in replays.items():
            assert offsets[0] >= committed_at_leave[partition], (
                f"partition {partition}: offset {offsets[0]} was committed ({committed_at_leave[partition]}), then repeated"
            )
