"""InferenceDeployments in e2e tests: build, apply and read them through kubectl."""

import json
from typing import Any

from egpu_localcluster.kubectl import Kubectl
from egpu_localcluster.readywatch import ReadyWatch

__all__ = ["ReadyWatch", "apply", "deployment", "placed_condition", "ready_on", "replica_pods", "status"]


def deployment(name: str, size: str, budget_s: int, replicas: int = 1, modes: tuple[str, ...] = ("bare-metal",),
               **spec: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "egpu-operator.io/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "model": {"name": name, "size": size},
            "placement": {"maxLoadSeconds": budget_s, "allowedModes": list(modes)},
            "template": {"spec": {"containers": [{"name": "server", "image": "registry.example/llm:1"}]}},
            **spec,
        },
    }


def apply(kube: Kubectl, namespace: str, manifest: dict[str, Any]) -> None:
    kube.run("apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))


def status(kube: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return kube.get_json("idep", name, "-n", namespace).get("status") or {}


def replica_pods(kube: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    pods = kube.get_json("pods", "-n", namespace, "-l", f"egpu-operator.io/inference-deployment={name}")["items"]
    return [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]


def ready_on(kube: Kubectl, namespace: str, name: str, count: int) -> list[str] | None:
    """Nodes of the deployment's Ready pods, once exactly ``count`` pods exist and are all Ready."""
    pods = replica_pods(kube, namespace, name)
    ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]
    if len(pods) != count or len(ready) != count or status(kube, namespace, name).get("readyReplicas") != count:
        return None
    return sorted(pod["spec"]["nodeName"] for pod in ready)


def placed_condition(kube: Kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    conditions = status(kube, namespace, name).get("conditions", [])
    return next((c for c in conditions if c["type"] == "Placed"), None)
