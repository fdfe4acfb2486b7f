"""Talk to a cluster through the real kubectl: apply a fleet, wait for nodes, read objects.

Used for the local control plane and for any cluster a user points the tests at
(``EGPU_E2E_KUBECONFIG``, e.g. kind), so both paths exercise the same code.
"""

import json
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from egpu_api.fleet import FleetProfile
from egpu_localcluster.nodes import fleet_manifests


class KubectlError(RuntimeError):
    """kubectl failed, or the cluster did not reach the awaited state in time."""


@dataclass(frozen=True)
class Kubectl:
    """A kubectl binary bound to one kubeconfig."""

    binary: Path
    kubeconfig: Path

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run kubectl; raise ``KubectlError`` with its stderr on failure if ``check``."""
        command = [str(self.binary), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def get_json(self, *args: str) -> Any:
        return json.loads(self.run("get", *args, "-o", "json").stdout)

    def apply(self, manifest: dict[str, Any]) -> None:
        self.run("apply", "-f", "-", stdin=json.dumps(manifest))

    def apply_fleet(self, fleet: FleetProfile) -> None:
        """Create (or update) one KWOK node per fleet entry."""
        self.apply(fleet_manifests(fleet))

    def wait_nodes_ready(self, names: Iterable[str], timeout_s: float = 60) -> None:
        """Poll until every named node is Ready and schedulable, or raise naming the ones that were not.

        Ready=True is not enough: the node lifecycle controller lifts its ``node.kubernetes.io/not-ready``
        taint a moment later, and until then the scheduler and the DaemonSet controller pass the node
        over (a DaemonSet created in that window counts the node out until its next resync)."""
        pending = set(names)
        deadline = time.monotonic() + timeout_s
        while True:
            nodes = self.get_json("nodes")["items"]
            pending -= {node["metadata"]["name"] for node in nodes if is_ready(node)}
            if not pending:
                return
            if time.monotonic() > deadline:
                raise KubectlError(f"nodes not Ready after {timeout_s:.0f} s: {', '.join(sorted(pending))}")
            time.sleep(0.5)

    def wait_default_service_account(self, namespace: str, timeout_s: float = 30) -> None:
        """Poll until ``namespace`` has its default ServiceAccount: the controller manager creates it
        shortly after the namespace, and until then admission rejects every pod there."""
        deadline = time.monotonic() + timeout_s
        while self.run("get", "serviceaccount", "default", "-n", namespace, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise KubectlError(f"no default ServiceAccount in namespace {namespace} after {timeout_s:.0f} s")
            time.sleep(0.2)


LIFECYCLE_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})


def is_ready(node: dict[str, Any]) -> bool:
    """Whether a Node (as JSON) has condition Ready=True and none of the node lifecycle controller's taints."""
    conditions = node.get("status", {}).get("conditions", [])
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    tainted = any(t.get("key") in LIFECYCLE_TAINTS for t in node.get("spec", {}).get("taints") or [])
    return ready and not tainted
