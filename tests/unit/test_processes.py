"""The supervisor of several worker processes: their environments, the merged metrics, and its
lifecycle with real child processes (small Python programs standing in for workers)."""

from __future__ import annotations

import sys
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from worker.processes import PROCESS_LABEL, child_environment, merge_metrics, run_processes, worker_command
from worker.settings import WorkerSettings


def settings(**values) -> WorkerSettings:
    return WorkerSettings(**values)


def test_each_process_gets_its_own_port_on_localhost_and_its_own_instance_id_and_runs_alone():
    chosen = settings(http={"port": 9000}, delivery={"instance_id": "pod-a"}, process={"count": 3})
    envs = [child_environment(chosen, i, {"PATH": "/bin", "WORKER_PROCESS__COUNT": "3"}) for i in range(3)]
    assert [env["WORKER_HTTP__PORT"] for env in envs] == ["9001", "9002", "9003"]
    assert [env["WORKER_DELIVERY__INSTANCE_ID"] for env in envs] == ["pod-a-0", "pod-a-1", "pod-a-2"]
    assert all(env["WORKER_PROCESS__COUNT"] == "1" and env["WORKER_HTTP__HOST"] == "127.0.0.1" for env in envs)
    assert all(env["PATH"] == "/bin" for env in envs)
    off = child_environment(settings(http={"port": 0}, process={"count": 2}), 1, {})
    assert off["WORKER_HTTP__PORT"] == "0"


def test_each_process_runs_the_worker_with_the_supervisors_settings_file(tmp_path):
    config = tmp_path / "worker.yaml"
    assert worker_command(config) == [sys.executable, "-m", "worker", "run", "--config", str(config)]
    assert worker_command(None) == [sys.executable, "-m", "worker", "run"]


def test_settings_refuse_no_processes():
    with pytest.raises(ValueError, match="process.count"):
        settings(process={"count": 0})


TEXT = """# HELP encoder_worker_events_consumed_total Records consumed, by topic.
# TYPE encoder_worker_events_consumed_total counter
encoder_worker_events_consumed_total{topic="in"} {consumed}
# HELP encoder_worker_model_duration_seconds Model time per forward pass.
# TYPE encoder_worker_model_duration_seconds histogram
encoder_worker_model_duration_seconds_bucket{le="0.1"} 1.0
encoder_worker_model_duration_seconds_bucket{le="+Inf"} 2.0
encoder_worker_model_duration_seconds_count 2.0
encoder_worker_model_duration_seconds_sum 0.3
"""


def test_metrics_of_every_process_are_one_exposition_with_each_series_labelled_by_its_process():
    merged = merge_metrics({0: TEXT.replace("{consumed}", "5.0"), 1: TEXT.replace("{consumed}", "7.0")}).decode()
    families = {family.name: family for family in text_string_to_metric_families(merged)}
    consumed = families["encoder_worker_events_consumed"]
    assert consumed.type == "counter"
    assert sorted((s.labels[PROCESS_LABEL], s.labels["topic"], s.value) for s in consumed.samples) == [
        ("0", "in", 5.0), ("1", "in", 7.0)]
    histogram = families["encoder_worker_model_duration_seconds"]
    assert histogram.type == "histogram"
    counts = [s for s in histogram.samples if s.name.endswith("_count")]
    assert sorted(s.labels[PROCESS_LABEL] for s in counts) == ["0", "1"]
    assert merged.count("# TYPE encoder_worker_model_duration_seconds histogram") == 1
    assert merge_metrics({}) == b""


# Stands in for a worker: stops with exit code 0 on SIGTERM; process 0 (by its instance id) ends
# on its own after half a second with the exit code given, if one is.
CHILD = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
if len(sys.argv) > 1 and os.environ["WORKER_DELIVERY__INSTANCE_ID"].endswith("-0"):
    time.sleep(0.5)
    sys.exit(int(sys.argv[1]))
time.sleep(120)
"""


def supervise(count: int, command: list[str], stop: threading.Event) -> tuple[list[int], threading.Thread]:
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(run_processes(settings(http={"port": 0}, process={"count": count}), None, stop,
                                                   command)))
    thread.start()
    return result, thread


def test_stopping_the_supervisor_stops_every_process_and_exits_zero():
    stop = threading.Event()
    result, thread = supervise(3, [sys.executable, "-c", CHILD], stop)
    time.sleep(1.0)
    assert thread.is_alive()  # the processes run until told to stop
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive() and result == [0]


def test_a_process_that_ends_on_its_own_stops_the_others_and_the_supervisor_fails():
    stop = threading.Event()
    started = time.monotonic()
    result, thread = supervise(3, [sys.executable, "-c", CHILD, "3"], stop)
    thread.join(timeout=30)
    # Process 0 ended with 3; the others, which would have run for two minutes, were stopped.
    assert not thread.is_alive() and result == [3]
    assert time.monotonic() - started < 30
    stop.set()
