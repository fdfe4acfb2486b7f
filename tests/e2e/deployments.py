"""InferenceDeployments in e2e tests: build, apply and read them through kubectl."""

import json
import threading
import time
from typing import Any

from egpu_localcluster.kubectl import Kubectl

DEPLOYMENT_LABEL = "egpu-operator.io/inference-deployment"


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


class ReadyWatch:
    """Watches a namespace's replica pods and keeps the fewest Ready replicas seen, per deployment.

    A watch sees every transition in order, so a dip that lasts a fraction of a second (an
    evicted pod gone before its replacement is Ready) is counted; polling could miss it.
    A terminating pod counts as not Ready: endpoints drop it from service at once.
    """

    def __init__(self, kube: Kubectl, namespace: str) -> None:
        from kubernetes import client, watch

        from egpu_node_agent.kube import api_client

        self._core = client.CoreV1Api(api_client(kube.kubeconfig))
        self._watch = watch.Watch()
        self._namespace = namespace
        self._ready: dict[str, dict[str, bool]] = {}  # deployment -> pod -> ready
        self.minimum: dict[str, int] = {}
        self.timeline: list[tuple[float, str, str, bool, int]] = []  # when, event, pod, ready, Ready replicas after
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ready-watch", daemon=True)

    def __enter__(self) -> "ReadyWatch":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping = True
        self._watch.stop()
        self._thread.join(timeout=10)

    def ready(self, deployment: str) -> int:
        with self._lock:
            return sum(self._ready.get(deployment, {}).values())

    def reset(self) -> None:
        """Start counting the minimum from now."""
        with self._lock:
            self.minimum = {name: sum(pods.values()) for name, pods in self._ready.items()}

    def _run(self) -> None:
        try:
            self._follow()
        except Exception:  # the connection closes under the stream when the watch is stopped
            if not self._stopping:
                raise

    def _follow(self) -> None:
        stream = self._watch.stream(
            self._core.list_namespaced_pod, self._namespace, label_selector=DEPLOYMENT_LABEL, timeout_seconds=600
        )
        for event in stream:
            pod = event["object"]
            name = (pod.metadata.labels or {}).get(DEPLOYMENT_LABEL)
            conditions = (pod.status.conditions if pod.status else None) or []
            ready = (
                event["type"] != "DELETED"
                and pod.metadata.deletion_timestamp is None
                and any(c.type == "Ready" and c.status == "True" for c in conditions)
            )
            with self._lock:
                pods = self._ready.setdefault(name, {})
                if event["type"] == "DELETED":
                    pods.pop(pod.metadata.name, None)
                else:
                    pods[pod.metadata.name] = ready
                count = sum(pods.values())
                self.timeline.append((time.monotonic(), event["type"], pod.metadata.name, ready, count))
                if name in self.minimum:
                    self.minimum[name] = min(self.minimum[name], count)
