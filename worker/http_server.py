"""The worker's one small HTTP server: `/metrics`, `/livez`, `/readyz` on `WORKER_HTTP__PORT`."""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from worker.health import WorkerStatus, liveness, readiness

log = logging.getLogger(__name__)


class HealthServer:
    def __init__(
        self, host: str, port: int, status: WorkerStatus, registry: CollectorRegistry, liveness_timeout_s: float
    ) -> None:
        status_ref, registry_ref, timeout = status, registry, liveness_timeout_s

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry_ref), CONTENT_TYPE_LATEST)
                elif path in ("/livez", "/readyz"):
                    check = liveness if path == "/livez" else readiness
                    verdict = check(status_ref, timeout, time.monotonic())
                    body = orjson.dumps({"ok": verdict.ok, "reasons": verdict.reasons})
                    self._send(200 if verdict.ok else 503, body, "application/json")
                else:
                    self._send(404, b'{"error": "not found"}', "application/json")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # probes every few seconds would drown the logs

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("http server listening", extra={"port": self.port, "paths": ["/metrics", "/livez", "/readyz"]})
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
