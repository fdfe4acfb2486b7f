"""GPUMaintenances in e2e tests: create them, wait for phases, read their conditions."""

import json
from typing import Any

from egpu_localcluster.kubectl import Kubectl
from tests.e2e.helpers import wait_for


def create(kube: Kubectl, name: str, node: str, reason: str = "reseat the eGPU dock", **spec: Any) -> None:
    manifest = {
        "apiVersion": "egpu-operator.io/v1alpha1",
        "kind": "GPUMaintenance",
        "metadata": {"name": name},
        "spec": {"nodeName": node, "reason": reason, **spec},
    }
    kube.run("create", "-f", "-", stdin=json.dumps(manifest))


def get(kube: Kubectl, name: str) -> dict[str, Any]:
    return kube.get_json("gpumaintenance", name)


def wait_phase(kube: Kubectl, name: str, phase: str, timeout_s: float = 60) -> dict[str, Any]:
    return wait_for(
        lambda: found if (found := get(kube, name)).get("status", {}).get("phase") == phase else None,
        timeout_s,
        f"GPUMaintenance {name} to reach {phase}",
    )


def condition(maintenance: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in maintenance["status"]["conditions"] if c["type"] == kind)


def wait_condition(kube: Kubectl, name: str, kind: str, reason: str, timeout_s: float = 60) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        conditions = get(kube, name).get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == kind and c["reason"] == reason), None)

    return wait_for(probe, timeout_s, f"GPUMaintenance {name}: condition {kind} with reason {reason}")


def complete(kube: Kubectl, name: str) -> dict[str, Any]:
    kube.run("patch", "gpumaintenance", name, "--type=merge", "-p", '{"spec": {"completed": true}}')
    return wait_phase(kube, name, "Completed")


def node_spec(kube: Kubectl, name: str) -> tuple[bool, str | None]:
    """(cordoned, value of the maintenance label)."""
    found = kube.get_json("node", name)
    return bool(found["spec"].get("unschedulable")), found["metadata"].get("labels", {}).get("egpu-operator.io/maintenance")
