"""Start and stop one local control plane, isolated in its own work folder.

Every cluster gets its own ``KWOK_WORKDIR`` and kubeconfig, and kwokctl picks free ports,
so parallel clusters (two test runs, a demo beside a test) never collide and the user's
``~/.kube/config`` is never touched. ``stop`` verifies that no process of the cluster
survived and kills any that did, so a test run leaves nothing behind.
"""

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from egpu_localcluster.kubectl import Kubectl
from egpu_localcluster.stages import (
    StagesError,
    controller_manager_qps,
    kwok_parallelism,
    model_load_stages,
    quiet_heartbeat_options,
)
from egpu_localcluster.tools import Tools


class ClusterError(RuntimeError):
    """The cluster could not be started, used or stopped cleanly; the message says why."""


#: KWOK workers with ``quiet_nodes`` (its default is 4): each is one round trip to the local API
#: server, so more of them in flight keep both cores busy while thousands of nodes start.
QUIET_NODES_WORKERS = 16

#: A DNS label, as kwokctl names the cluster's folder and processes after it: a name with "/" or
#: ".." would put the cluster outside its folder, where "down" cannot find it.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def check_name(name: str) -> str:
    """``name`` if it can name a cluster; else ``ClusterError`` saying what a name may hold."""
    if _NAME.fullmatch(name) is None:
        raise ClusterError(
            f"--name {name!r} is not a valid cluster name: use at most 63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, e.g. egpu-test"
        )
    return name


def progress(message: str) -> None:
    """One progress line on stderr, so long steps are visible without polluting stdout."""
    print(f"[localcluster] {message}", file=sys.stderr, flush=True)


class LocalCluster:
    """A kube-apiserver, controller manager, scheduler, etcd and KWOK controller on this machine."""

    def __init__(
        self,
        tools: Tools,
        name: str | None = None,
        workdir: Path | None = None,
        model_load_scale: float | None = None,
        quiet_nodes: bool = False,
    ) -> None:
        """``model_load_scale``: when set, replica pods become Ready only after their estimated model
        load time times this factor (see ``stages``); unset, KWOK makes every pod Ready at once.
        ``quiet_nodes``: for thousands of nodes (benchmarks): kubelet Leases renewed every 5 min, not
        every 50 s, more KWOK workers, and a controller manager that lifts new nodes' not-ready
        taints at once (``stages.quiet_heartbeat_options``, ``stages.controller_manager_qps``). Off by default, so the
        e2e suite and the demo keep kwokctl's node lifecycle timings (no e2e test reads kubelet
        Leases or waits for a node to go NotReady on its own; none was run with it on)."""
        self.tools = tools
        self.model_load_scale = model_load_scale
        self.quiet_nodes = quiet_nodes
        self.name = check_name(name or f"egpu-{uuid.uuid4().hex[:8]}")
        self._owns_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.kubeconfig = self.workdir / "kubeconfig.yaml"
        self._env = {**os.environ, "KWOK_WORKDIR": str(self.workdir)}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, wait_s: int = 180) -> None:
        """Create the cluster and wait until its API server answers; stops it again on failure."""
        kube_version = self._kube_version()
        config = self.workdir / "kwokctl.yaml"
        documents = [self._kwokctl_config(kube_version)]
        if self.quiet_nodes:
            documents[0]["options"] |= quiet_heartbeat_options()
            documents[0]["componentsPatches"] = controller_manager_qps()
            documents.append(kwok_parallelism(QUIET_NODES_WORKERS))
        if self.model_load_scale is not None:
            try:
                documents += model_load_stages(self.tools.path("kwok-stages"), self.model_load_scale)
            except StagesError as error:
                raise ClusterError(str(error)) from None
        config.write_text(yaml.safe_dump_all(documents, sort_keys=False))
        progress(f"starting cluster {self.name} (Kubernetes {kube_version}) in {self.workdir}")
        started = time.monotonic()
        try:
            # kwokctl picks "free" ports by probing, so two clusters created at the same moment
            # (a test run and a benchmark) can pick the same one and one kwok-controller dies with
            # "address already in use". Creating clusters one at a time per machine closes that race:
            # once a cluster is up, its ports are bound and the next one sees them taken.
            with _machine_lock():
                self._kwokctl(
                    "create", "cluster", "--config", str(config), "--kubeconfig", str(self.kubeconfig),
                    "--wait", f"{wait_s}s",
                )  # fmt: skip
        except ClusterError:
            self.stop(check=False)
            raise
        progress(f"cluster {self.name} is up in {time.monotonic() - started:.1f} s")

    def spawn(self, command: Sequence[str], log_name: str) -> int:
        """Start a process that belongs to the cluster (e.g. the fleet simulator); ``stop`` ends it first."""
        log = (self.workdir / f"{log_name}.log").open("ab")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        with (self.workdir / "companions.pids").open("a") as pids:
            pids.write(f"{process.pid}\n")
        return process.pid

    @staticmethod
    def running(pid: int) -> bool:
        """Whether a companion ``spawn`` started still runs (one that exited is a zombie until reaped)."""
        return Path(f"/proc/{pid}").exists() and not _is_zombie(pid)

    def _stop_companions(self) -> None:
        pids_file = self.workdir / "companions.pids"
        if not pids_file.exists():
            return
        pids = [int(line) for line in pids_file.read_text().split()]
        for pid in pids:
            _kill(pid, signal.SIGTERM)
        for pid in self._wait_for_exit(pids, timeout_s=10):
            _kill(pid, signal.SIGKILL)
        pids_file.unlink()

    def stop(self, check: bool = True) -> None:
        """Stop its companions, delete the cluster, then make sure none of its processes is left running.

        With ``check``, survivors (killed all the same) raise ``ClusterError`` afterwards:
        a leak is a bug to fix, not to hide.
        """
        self._stop_companions()
        subprocess.run(
            [str(self.tools.kwokctl), "--name", self.name, "delete", "cluster"],
            env=self._env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        survivors = self._wait_for_exit(self.processes(), timeout_s=10)
        for pid in survivors:
            _kill(pid, signal.SIGKILL)
        if self._owns_workdir:
            subprocess.run(["rm", "-rf", str(self.workdir)], check=False)
        if survivors and check:
            raise ClusterError(f"processes {survivors} of cluster {self.name} outlived 'kwokctl delete'; killed them")
        progress(f"cluster {self.name} stopped; no process left behind")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.stop(check=kind is None)

    def processes(self) -> list[int]:
        """PIDs of running processes that belong to this cluster (their command line names its folder)."""
        marker = str(self.workdir).encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:  # the process ended while we looked
                continue
            if marker in cmdline:
                found.append(int(entry.name))
        return sorted(found)

    # -- fault injection (e2e fault tests, bench/faults.py) ------------------------------------

    def component_pids(self, component: str) -> list[int]:
        """PIDs of one component of this cluster, by binary name: kube-apiserver, etcd, kwok, ..."""
        found = []
        for pid in self.processes():
            try:
                argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
            except OSError:
                continue
            if Path(argv0).name == component:
                found.append(pid)
        return found

    def kill_component(self, component: str, sig: signal.Signals = signal.SIGKILL) -> list[int]:
        """Send ``sig`` to a component (SIGKILL: a crash; SIGSTOP/SIGCONT: a hang and its end)."""
        pids = self.component_pids(component)
        if not pids:
            raise ClusterError(f"cluster {self.name} has no running {component}")
        for pid in pids:
            _kill(pid, sig)
        if sig == signal.SIGKILL:
            self._wait_for_exit(pids, timeout_s=10)
        return pids

    def restart_stopped(self, wait_s: int = 120) -> None:
        """Start again every component that is not running (kwokctl leaves running ones alone)."""
        self._kwokctl("start", "cluster", "--wait", f"{wait_s}s")

    @property
    def kubectl(self) -> Kubectl:
        """kubectl bound to this cluster's own kubeconfig."""
        return Kubectl(self.tools.kubectl, self.kubeconfig)

    # -- internals ---------------------------------------------------------------------------

    def _kube_version(self) -> str:
        result = subprocess.run(
            [str(self.tools.path("kube-apiserver")), "--version"], capture_output=True, text=True, check=False
        )
        # Prints "Kubernetes v1.35.4"; kwokctl uses the version to pick flags and feature gates.
        version = result.stdout.split()[-1] if result.returncode == 0 and result.stdout.split() else ""
        if not version.startswith("v"):
            raise ClusterError(f"cannot read the kube-apiserver version: {result.stderr.strip() or result.stdout}")
        return version

    def _kwokctl_config(self, kube_version: str) -> dict[str, Any]:
        bin_dir = str(self.tools.bin_dir)
        return {
            "kind": "KwokctlConfiguration",
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "options": {
                "runtime": "binary",
                "kubeVersion": kube_version,
                "kubeBinaryPrefix": bin_dir,
                "kubectlBinary": str(self.tools.kubectl),
                "etcdBinary": str(self.tools.path("etcd")),
                "kwokControllerBinary": str(self.tools.path("kwok")),
                # RBAC and admission on, as in a real cluster: the chart's RBAC and admission
                # policies are tested against this API server.
                "kubeAuthorization": True,
                "kubeAdmission": True,
                "securePort": True,
            },
        }

    def _kwokctl(self, *args: str) -> None:
        command = [str(self.tools.kwokctl), "--name", self.name, *args]
        result = subprocess.run(command, env=self._env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise ClusterError(f"kwokctl {' '.join(args[:2])} failed: " + " | ".join(detail))

    @staticmethod
    def _wait_for_exit(pids: Sequence[int], timeout_s: float) -> list[int]:
        deadline = time.monotonic() + timeout_s
        alive = list(pids)
        while alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = [pid for pid in alive if Path(f"/proc/{pid}").exists() and not _is_zombie(pid)]
        return alive


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    lock_path = Path(tempfile.gettempdir()) / "egpu-localcluster.lock"
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
        os.kill(pid, sig)
