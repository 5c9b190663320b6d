from types import SimpleNamespace

from worker.health import WorkerStatus, liveness, readiness


def stage(name, last_beat, busy_since=None):
    return SimpleNamespace(name=name, last_beat=last_beat, busy_since=busy_since)


def ready_status(now=100.0):
    return WorkerStatus(model_ready=True, subscribed=True, poll_beat=now, stages=[stage("model", now), stage("publish", now)])


def test_a_fresh_worker_is_live_and_ready():
    assert liveness(ready_status(), 30, now=100.0).ok
    assert readiness(ready_status(), 30, now=100.0).ok


def test_not_ready_until_the_model_is_warm_and_subscribed():
    status = WorkerStatus(poll_beat=None)
    verdict = readiness(status, 30, now=1.0)
    assert not verdict.ok
    assert "model not loaded and warmed up yet" in verdict.reasons
    assert liveness(status, 30, now=1.0).ok  # loading is not a reason to restart


def test_a_stalled_poll_loop_turns_liveness_red():
    status = ready_status(now=100.0)
    verdict = liveness(status, 30, now=131.0)
    assert not verdict.ok and "poll loop" in verdict.reasons[0]
    assert not readiness(status, 30, now=131.0).ok


def test_a_model_stuck_on_one_batch_turns_liveness_red():
    status = ready_status(now=100.0)
    status.stages[0] = stage("model", last_beat=100.0, busy_since=50.0)
    status.poll_beat = 100.0
    verdict = liveness(status, 30, now=100.0)
    assert not verdict.ok and verdict.reasons == ["model stage stuck for 50s"]


def test_lost_brokers_and_shutdown_make_it_not_ready_but_alive():
    status = ready_status()
    status.connected = False
    assert readiness(status, 30, now=100.0).reasons == ["no broker reachable"]
    status.connected, status.stopping = True, True
    assert readiness(status, 30, now=100.0).reasons == ["shutting down"]
    assert liveness(status, 30, now=100.0).ok


def test_no_partitions_assigned_is_still_ready():
    # A replica beyond the partition count waits for an assignment; it must not be restarted.
    status = ready_status()
    status.assigned_partitions = 0
    assert readiness(status, 30, now=100.0).ok


def test_a_stalled_partition_turns_liveness_red_with_the_partition_named():
    status = ready_status(now=100.0)
    status.stalled_partitions = ["partition in:3 stalled: 504 records waiting, nothing fetched for 61s"]
    verdict = liveness(status, 30, now=100.0)
    assert not verdict.ok and verdict.reasons == status.stalled_partitions
    assert not readiness(status, 30, now=100.0).ok
