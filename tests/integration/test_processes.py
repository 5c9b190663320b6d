"""Several worker processes in one container (`WORKER_PROCESS__COUNT`), on the real broker: they
share the partitions, the supervisor's one port answers for all of them, SIGTERM stops them all,
and one that dies takes the container down rather than leaving it half-working."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid

import orjson
import pytest

from tests.support.http_support import get, scrape
from tests.support.kafka_support import WorkerProcess, json_event, produce, read_json, wait_until, worker_env

pytestmark = pytest.mark.integration

PROCESSES = 2
EVENTS = 120


def free_ports(count: int) -> int:
    """A port with the `count - 1` after it free as well (the supervisor's and its processes')."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count > 65535:
            continue
        sockets = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no block of free ports")


def by_process(port: int, name: str) -> dict[str, float]:
    """A metric's value summed per process, from the supervisor's /metrics."""
    values: dict[str, float] = {}
    for (sample, labels), value in scrape(port).items():
        if sample == name:
            process = dict(labels)["worker_process"]
            values[process] = values.get(process, 0.0) + value
    return values


def start(bootstrap: str, topics: dict[str, str], model_dir) -> tuple[WorkerProcess, int]:  # type: ignore[no-untyped-def]
    port = free_ports(PROCESSES + 1)
    env = worker_env(bootstrap, topics, f"g-{uuid.uuid4().hex[:8]}", http__port=port,
                     process__count=PROCESSES, model__path=str(model_dir))
    supervisor = WorkerProcess(env)
    # Both processes ready and each holding partitions before any event is produced.
    wait_until(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, timeout_s=180, what="/readyz")

    def both_assigned() -> bool:
        assigned = by_process(port, "encoder_worker_partitions_assigned")
        return len(assigned) == PROCESSES and min(assigned.values()) >= 1 and sum(assigned.values()) == 3
    wait_until(both_assigned, timeout_s=60, what="partitions shared by both processes")
    return supervisor, port


def test_processes_share_the_partitions_behind_one_port_and_stop_together(bootstrap, worker_topics, tiny_bert_dir):
    supervisor, port = start(bootstrap, worker_topics, tiny_bert_dir)
    with supervisor:
        produce(bootstrap, worker_topics["input"],
                [(f"user-{i}".encode(), json_event(f"e{i}", f"text number {i}")) for i in range(EVENTS)])
        labels = read_json(bootstrap, worker_topics["labels"], EVENTS, timeout_s=120)
        assert sorted(record["id"] for record in labels) == sorted(f"e{i}" for i in range(EVENTS))
        consumed = by_process(port, "encoder_worker_events_consumed_total")
        assert set(consumed) == {"0", "1"} and min(consumed.values()) > 0 and sum(consumed.values()) == EVENTS
        assert get(f"http://127.0.0.1:{port}/livez")[0] == 200
        assert supervisor.stop(signal.SIGTERM, timeout_s=120) == 0
        logs = supervisor.logs()
    lines = [orjson.loads(line) for line in logs.splitlines() if line.startswith("{")]
    [started] = [line for line in lines if line["message"] == "worker processes started"]
    assert not any(_alive(pid) for pid in started["pids"])
    assert sum(line["message"] == "worker stopped" for line in lines) == PROCESSES


def test_a_process_that_dies_takes_the_others_and_the_container_down(bootstrap, worker_topics, tiny_bert_dir):
    supervisor, port = start(bootstrap, worker_topics, tiny_bert_dir)
    with supervisor:
        lines = [orjson.loads(line) for line in supervisor.logs().splitlines() if line.startswith("{")]
        [started] = [line for line in lines if line["message"] == "worker processes started"]
        victim, survivor = started["pids"]
        os.kill(victim, signal.SIGKILL)
        code = supervisor.wait(timeout_s=120)
        assert code != 0
        assert not _alive(survivor)
        assert "worker process ended; stopping the others" in supervisor.logs()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes: its parent (the supervisor) has ended.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
