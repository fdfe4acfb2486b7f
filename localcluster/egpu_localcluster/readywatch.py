"""Ready replica pods of a namespace, watched: the fewest Ready at any moment of a drain.

Shared by the e2e tests and bench/maintenance_drain.py (it reads the cluster through the
Kubernetes client, so it lives with the local-cluster tooling, not the operator).
"""

import threading
import time
from pathlib import Path
from typing import Any

from egpu_api import keys

DEPLOYMENT_LABEL = keys.DEPLOYMENT_LABEL


class ReadyWatch:
    """Watches a namespace's replica pods and keeps the fewest Ready replicas seen, per deployment.

    A watch sees every transition in order, so a dip that lasts a fraction of a second (an
    evicted pod gone before its replacement is Ready) is counted; polling could miss it.
    A terminating pod counts as not Ready: endpoints drop it from service at once.
    """

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        from kubernetes import client, watch

        from egpu_runtime.kube import api_client

        self._core: Any = client.CoreV1Api(api_client(kubeconfig))
        watches: Any = watch  # the client's watch module is untyped
        self._watch: Any = watches.Watch()
        self._namespace = namespace
        self._ready: dict[str, dict[str, bool]] = {}  # deployment -> pod -> ready
        self.minimum: dict[str, int] = {}
        self.minimum_total = 0  # over all deployments of the namespace
        self.timeline: list[tuple[float, str, str, bool, int]] = []  # when, event, pod, ready, Ready replicas after
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ready-watch", daemon=True)

    def start(self) -> "ReadyWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._watch.stop()
        self._thread.join(timeout=10)

    def __enter__(self) -> "ReadyWatch":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def ready(self, deployment: str) -> int:
        with self._lock:
            return sum(self._ready.get(deployment, {}).values())

    def total(self) -> int:
        with self._lock:
            return self._total()

    def reset(self) -> None:
        """Start counting the minimum from now."""
        with self._lock:
            self.minimum = {name: sum(pods.values()) for name, pods in self._ready.items()}
            self.minimum_total = self._total()

    def _total(self) -> int:
        return sum(sum(pods.values()) for pods in self._ready.values())

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
            name = str((pod.metadata.labels or {}).get(DEPLOYMENT_LABEL))
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
                self.minimum_total = min(self.minimum_total, self._total())
