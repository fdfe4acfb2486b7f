"""The CRDs installed and the operator run as a process, as the e2e suite, the demo and the benchmarks need them.

``install_crds`` returns once the API server serves the CRDs and publishes their schemas.
``OperatorProcess.start`` returns once the operator's ``/readyz`` answers 200 (its first
listings are in), not after a guessed sleep; it fails with the log's path if the process exits
or does not get ready in time.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from signal import SIGKILL, SIGTERM

from egpu_localcluster.kubectl import Kubectl, KubectlError

CRDS = Path(__file__).resolve().parents[2] / "crds"
#: How long an operator may take to list the cluster before it counts as failed to start.
READY_TIMEOUT_S = 60.0


class OperatorError(RuntimeError):
    """The operator exited or did not get ready; the message names its log."""


def install_crds(kubectl: Kubectl, crds: Path = CRDS, timeout_s: float = 30) -> None:
    """Apply the CRDs and wait until they are Established and their OpenAPI schema is published
    (what ``kubectl explain`` and client-side validation read; it follows shortly after)."""
    kubectl.run("apply", "--server-side", "-f", str(crds))
    kubectl.run("wait", "--for", "condition=Established", "--timeout", f"{timeout_s:.0f}s", "-f", str(crds))
    _poll(
        lambda: kubectl.run("explain", "inferencedeployments", check=False).returncode == 0,
        timeout_s,
        "the InferenceDeployment OpenAPI schema to be published",
    )


def free_port() -> int:
    """A TCP port nothing listens on now, for the operator's metrics and probes."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def operator_command(kubeconfig: Path, port: int, *extra_args: str) -> list[str]:
    """``egpu-operator run`` against ``kubeconfig``, serving /metrics, /healthz and /readyz on ``port``."""
    command = [sys.executable, "-m", "egpu_operator", "run", "--kubeconfig", str(kubeconfig), "--metrics-port", str(port)]
    return [*command, *extra_args]


def wait_ready(port: int, exited: Callable[[], bool], log: Path, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll the operator's ``/readyz`` until it answers 200; ``OperatorError`` if ``exited()`` or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while not _ready(port):
        if exited():
            raise OperatorError(f"the operator exited before it was ready; see {log}")
        if time.monotonic() > deadline:
            raise OperatorError(f"the operator was not ready within {timeout_s:.0f} s; see {log}")
        time.sleep(0.1)


def scrape(port: int) -> str:
    """The operator's /metrics, as text."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
    return text


class OperatorProcess:
    """The operator as it runs for real: a separate process with its own API client and kopf watches.

    ``env`` adds environment variables; ``wrapper`` prefixes the command (a profiler). The
    process gets a fresh free port on each ``start``.
    """

    def __init__(self, kubeconfig: Path, log: Path, env: Mapping[str, str] | None = None, wrapper: Sequence[str] = ()) -> None:
        self.kubeconfig, self.log = kubeconfig, log
        self.env, self.wrapper = dict(env or {}), list(wrapper)
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    def start(self, *extra_args: str, ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start it and return once it is ready (``/readyz``)."""
        self.port = free_port()
        command = [*self.wrapper, *operator_command(self.kubeconfig, self.port, *extra_args)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT)
        process = self.process
        wait_ready(self.port, lambda: process.poll() is not None, self.log, ready_timeout_s)

    def metrics(self) -> str:
        if self.port is None:
            raise OperatorError("the operator is not running")
        return scrape(self.port)

    def signal(self, sig: int) -> None:
        """SIGSTOP pauses it (a stalled VM, a debugger); SIGCONT lets it go on."""
        if self.process is None:
            raise OperatorError("the operator is not running")
        self.process.send_signal(sig)

    def stop(self, kill: bool = False, sig: int = SIGTERM, timeout_s: float = 20) -> None:
        """Stop it with ``sig`` (SIGKILL with ``kill``) and wait for it to exit."""
        if self.process is None:
            return
        self.process.send_signal(SIGKILL if kill else sig)
        self.process.wait(timeout=timeout_s)
        self.process, self.port = None, None


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False  # not listening yet, or 503 while it lists the cluster


def _poll(probe: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise KubectlError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)
