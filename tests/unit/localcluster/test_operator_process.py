"""Starting the operator waits on its /readyz, not on a guess; a process that dies says where its log is."""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from egpu_localcluster.operator_process import OperatorError, operator_command, wait_ready


class Probe:
    """A /readyz that answers 503 ``not_ready`` times, then 200."""

    def __init__(self, not_ready: int) -> None:
        self.not_ready, self.asked = not_ready, 0
        probe = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                probe.asked += 1
                ready = self.path == "/readyz" and probe.asked > probe.not_ready
                self.send_response(200 if ready else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]


@pytest.fixture
def probe() -> Iterator[Probe]:
    served = Probe(not_ready=3)
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.server.shutdown()


def test_ready_once_readyz_answers_200(probe: Probe) -> None:
    wait_ready(probe.port, lambda: False, Path("operator.log"))
    assert probe.asked == 4, "asked until it answered 200, and no more"


def test_an_operator_that_exits_fails_the_start_naming_its_log(probe: Probe) -> None:
    with pytest.raises(OperatorError, match=r"exited before it was ready; see /tmp/op\.log"):
        wait_ready(probe.port, lambda: True, Path("/tmp/op.log"))


def test_the_command_serves_probes_on_the_port_given() -> None:
    command = operator_command(Path("/k"), 8123, "--auto-maintenance")
    assert command[1:] == ["-m", "egpu_operator", "run", "--kubeconfig", "/k", "--metrics-port", "8123", "--auto-maintenance"]
