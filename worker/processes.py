"""Several worker processes in one container, under one supervisor (`WORKER_PROCESS__COUNT`).

One worker process is bound by the Python work each event costs under its interpreter lock
(`bench/host_path.py`); a GPU running a small encoder can take events faster than that. So the
supervisor starts `count` ordinary worker processes (`python -m worker run`), each a member of the
consumer group with its own model, its own instance id (`<id>-<i>`, distinct transactional ids in
exactly-once mode) and its own HTTP server on 127.0.0.1, port `http.port` + 1 + i. The supervisor
loads no model and consumes nothing: it serves the container's HTTP port — `/livez` and `/readyz`
pass when every process's do, `/metrics` is every process's, each series labelled
`worker_process="<i>"` — forwards SIGTERM and SIGINT, and stops the others and exits non-zero when
one process ends on its own, so that Kubernetes restarts the pod whole.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from worker.http_server import BackgroundServer, QuietHandler
from worker.kafka_clients import instance_id
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

PROCESS_LABEL = "worker_process"
# A process stopping on SIGTERM drains and commits for up to `drain_timeout_s`; this much more is
# left for closing its clients before it is killed.
STOP_MARGIN_S = 15.0
PROBE_TIMEOUT_S = 2.0


def child_port(settings: WorkerSettings, index: int) -> int:
    return settings.http.port + 1 + index if settings.http.port else 0


def child_environment(settings: WorkerSettings, index: int, environ: Mapping[str, str]) -> dict[str, str]:
    """Process `index`'s environment: the supervisor's, with what must differ between processes."""
    return {
        **environ,
        "WORKER_PROCESS__COUNT": "1",
        "WORKER_HTTP__PORT": str(child_port(settings, index)),
        "WORKER_HTTP__HOST": "127.0.0.1",  # reached through the supervisor's port
        "WORKER_DELIVERY__INSTANCE_ID": f"{instance_id(settings)}-{index}",
    }


def merge_metrics(texts: Mapping[int, str]) -> bytes:
    """Prometheus text of each process (by index) as one exposition, every series labelled with its process."""
    families: dict[str, Metric] = {}
    for index, text in sorted(texts.items()):
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                merged.samples.append(sample._replace(labels={PROCESS_LABEL: str(index), **sample.labels}))

    class Merged:
        def collect(self) -> list[Metric]:
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Merged())  # type: ignore[arg-type]
    return generate_latest(registry)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:  # noqa: S310 - our own localhost
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, ValueError) as exc:
        return 0, orjson.dumps({"ok": False, "reasons": [f"not answering: {exc}"]})


class SupervisorServer(BackgroundServer):
    """The container's HTTP port: each path answered from every process's own server."""

    def __init__(self, host: str, port: int, child_ports: list[int]) -> None:
        urls = [f"http://127.0.0.1:{child}" for child in child_ports]

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    answers = {i: _get(url + path) for i, url in enumerate(urls)}
                    texts = {i: body.decode() for i, (code, body) in answers.items() if code == 200}
                    self.send(200, merge_metrics(texts), CONTENT_TYPE_LATEST)
                elif path in ("/livez", "/readyz"):
                    reasons = []
                    for i, (code, body) in enumerate(_get(url + path) for url in urls):
                        if code != 200:
                            reasons += [f"process {i}: {reason}" for reason in _reasons(code, body)]
                    body = orjson.dumps({"ok": not reasons, "reasons": reasons})
                    self.send(503 if reasons else 200, body, "application/json")
                else:
                    self.send(404, b'{"error": "not found"}', "application/json")

        super().__init__(host, port, Handler)


def _reasons(code: int, body: bytes) -> list[str]:
    try:
        return list(orjson.loads(body).get("reasons") or []) or [f"HTTP {code}"]
    except (orjson.JSONDecodeError, AttributeError):
        return [f"HTTP {code}"]


def worker_command(config_file: Path | None) -> list[str]:
    """One worker process, with the supervisor's settings file (its environment comes with it)."""
    return [sys.executable, "-m", "worker", "run", *(["--config", str(config_file)] if config_file else [])]


def run_processes(
    settings: WorkerSettings, config_file: Path | None, stop: threading.Event, command: list[str] | None = None
) -> int:
    """Run `settings.process.count` worker processes (`command`, default `python -m worker run`)
    until `stop` is set or one of them ends; returns the exit code for the container."""
    count = settings.process.count
    command = command or worker_command(config_file)
    server = None
    if settings.http.port:
        server = SupervisorServer(settings.http.host, settings.http.port,
                                  [child_port(settings, i) for i in range(count)]).start()
    children = [subprocess.Popen(command, env=child_environment(settings, i, os.environ)) for i in range(count)]
    log.info("worker processes started", extra={"processes": count, "pids": [child.pid for child in children]})
    exit_code = 0
    try:
        while not stop.wait(0.5):
            ended = [(i, child.returncode) for i, child in enumerate(children) if child.poll() is not None]
            if ended:
                index, code = ended[0]
                log.error("worker process ended; stopping the others", extra={"worker_process": index, "exit_code": code})
                exit_code = code if code > 0 else 1  # ended on its own (or by a signal): restart the pod whole
                break
    finally:
        codes = _stop_all(children, settings.delivery.drain_timeout_s + STOP_MARGIN_S)
        if server is not None:
            server.stop()
    if exit_code == 0 and any(code != 0 for code in codes):
        exit_code = next((code for code in codes if code > 0), 1)
    log.info("worker processes stopped", extra={"exit_codes": codes})
    return exit_code


def _stop_all(children: list[subprocess.Popen[bytes]], timeout_s: float) -> list[int]:
    """SIGTERM to every process still running, then each waited for (killed past `timeout_s`)."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker process did not stop in time; killed", extra={"pid": child.pid})
            child.kill()
            child.wait()
    return [child.returncode for child in children]
