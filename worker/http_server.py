"""The HTTP servers: the worker's `/metrics`, `/livez`, `/readyz` on `WORKER_HTTP__PORT`, and what the supervisor of several processes builds on."""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from worker.health import WorkerStatus, liveness, readiness

log = logging.getLogger(__name__)


class QuietHandler(BaseHTTPRequestHandler):
    """Answers with `send`; logs no requests (probes every few seconds would drown the logs)."""

    def send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class BackgroundServer:
    """A threading HTTP server on a daemon thread of its own."""

    def __init__(self, host: str, port: int, handler: type[QuietHandler]) -> None:
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    def start(self) -> BackgroundServer:
        self._thread.start()
        log.info("http server listening", extra={"port": self.port, "paths": ["/metrics", "/livez", "/readyz"]})
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HealthServer(BackgroundServer):
    def __init__(
        self, host: str, port: int, status: WorkerStatus, registry: CollectorRegistry, liveness_timeout_s: float
    ) -> None:
        status_ref, registry_ref, timeout = status, registry, liveness_timeout_s

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self.send(200, generate_latest(registry_ref), CONTENT_TYPE_LATEST)
                elif path in ("/livez", "/readyz"):
                    check = liveness if path == "/livez" else readiness
                    verdict = check(status_ref, timeout, time.monotonic())
                    body = orjson.dumps({"ok": verdict.ok, "reasons": verdict.reasons})
                    self.send(200 if verdict.ok else 503, body, "application/json")
                else:
                    self.send(404, b'{"error": "not found"}', "application/json")

        super().__init__(host, port, Handler)
