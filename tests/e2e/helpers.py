"""Helpers for e2e tests: wait with a deadline, read nodes through kubectl."""

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from egpu_api import keys
from egpu_api.fleet import FleetProfile, parse_fleet
from egpu_localcluster.kubectl import Kubectl
from egpu_node_agent.simulator import FleetSimulator
from egpu_runtime.kube import api_client

T = TypeVar("T")
#: Namespace of the node agents' Leases in the e2e cluster.
NAMESPACE = "egpu-system"
P = "egpu-operator.io/"


def wait_for(probe: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.25) -> T:
    """Call ``probe`` until it returns something other than None; fail naming ``what`` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def node(kube: Kubectl, name: str) -> dict[str, Any]:
    return kube.get_json("node", name)


def labels(kube: Kubectl, name: str) -> dict[str, str]:
    return node(kube, name)["metadata"].get("labels", {})


def wait_label(kube: Kubectl, name: str, key: str, value: str, timeout_s: float = 10) -> None:
    wait_for(lambda: True if labels(kube, name).get(P + key) == value else None, timeout_s, f"{name} {key}={value}")


def condition(kube: Kubectl, name: str) -> dict[str, Any] | None:
    found = [c for c in node(kube, name)["status"].get("conditions", []) if c["type"] == "GPUHealthy"]
    return found[0] if found else None


def extra_node(kube: Kubectl, fleet: FleetProfile, source: str, name: str) -> FleetProfile:
    """A one-node fleet: ``source``'s hardware under a new ``name``, created Ready in the cluster."""
    document: dict[str, Any] = fleet.model_dump(by_alias=True, exclude_none=True)
    entry = next(node for node in document["nodes"] if node["name"] == source)
    extra = parse_fleet({**document, "nodes": [{**entry, "name": name}]})
    kube.apply_fleet(extra)
    kube.wait_nodes_ready([name])
    return extra


def non_fleet_nodes(kube: Kubectl, fleet: FleetProfile) -> list[str]:
    """Nodes of the cluster that are not the fleet's: none on the local control plane, the kind
    control plane and worker on the kind tier (real nodes without a GPU, so without labels)."""
    fleet_names = {fleet_node.name for fleet_node in fleet.nodes}
    return sorted(
        item["metadata"]["name"] for item in kube.get_json("nodes")["items"] if item["metadata"]["name"] not in fleet_names
    )


@contextmanager
def variant(kube: Kubectl, fleet: FleetProfile, source: str, name: str, **changes: Any) -> Iterator[None]:
    """A new node with ``source``'s hardware, changed by ``changes`` (fleet-format keys), and its agent."""
    document: dict[str, Any] = fleet.model_dump(by_alias=True, exclude_none=True)
    entry = next(n for n in document["nodes"] if n["name"] == source)
    entry["host"] |= changes.pop("host", {})
    for gpu in entry["gpus"]:
        gpu.pop("uuid", None)
    changed = FleetProfile.model_validate({**document, "nodes": [entry | changes]})
    extra = extra_node(kube, changed, source, name)
    with tempfile.TemporaryDirectory() as sysfs:
        agents = FleetSimulator(extra, api_client(kube.kubeconfig), NAMESPACE, Path(sysfs), poll_interval_s=1.0)
        agents.start()
        try:
            yield
        finally:
            agents.stop()
            kube.run("delete", "node", name, check=False)
            # The pods bound to it would wait for the pod garbage collector's orphan sweep (a 40 s
            # quarantine and a 20 s period), longer than the workspace's clean-up waits: the node is
            # gone for good, so they go now, as that sweep would take them.
            kube.run("delete", "pods", "--all-namespaces", "--field-selector", f"spec.nodeName={name}",
                     "--grace-period=0", "--force", "--wait=false", check=False)  # fmt: skip
            kube.run("delete", "resourceslices", "-l", f"{keys.FLEET_NODE_LABEL}={name}", check=False)
