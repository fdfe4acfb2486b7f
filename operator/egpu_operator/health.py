"""The operator's HTTP endpoints on the metrics port: ``/metrics``, ``/healthz`` and ``/readyz``.

- ``/healthz`` (the chart's liveness probe): 200 while the event loop turns and every worker of
  the work queues is running; 503 naming what is not. A kubelet restarts an operator whose loop is
  wedged or whose workers died, which ``/metrics`` (served from a thread of its own) never showed.
- ``/readyz`` (the readiness probe): 200 once the first listings are in (the node watch listed
  every node and kopf's indexes are captured); before that the operator places nothing. While one
  of the operator's CRDs is not installed, 503 naming it (``supervisor``; /healthz stays 200 then:
  a restart would not bring the CRD back). A
  follower (``leader``) answers 200 too: its indexes are warm, so it can take over at once, and a
  rolling update that waits for the new pod's readiness goes on while the old pod still leads.

Both answer from a thread of their own and only read what the operator records, so a probe
never waits on the API server.
"""

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

#: A check returns None when all is well, else one sentence saying what is wrong.
Check = Callable[[], str | None]


class HealthServer:
    """Serves the three endpoints on ``port`` (0: a free port, see ``port``) until ``stop``."""

    def __init__(self, port: int, registry: CollectorRegistry, healthy: Check, ready: Check, host: str = "") -> None:
        checks = {"/healthz": healthy, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path in checks:
                    problem = checks[path]()
                    body = "ok" if problem is None else problem
                    self._answer(200 if problem is None else 503, f"{body}\n".encode(), "text/plain; charset=utf-8")
                else:
                    self._answer(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # probes every few seconds are not news

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="egpu-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> "HealthServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
