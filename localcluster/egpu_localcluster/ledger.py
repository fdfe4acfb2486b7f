"""Replica pods of one namespace watched through a fault: the fewest Ready, and every pod deleted.

The watch survives the faults it watches: when the API server goes away it relists once it is
back, so a pod that vanished meanwhile is still counted (nothing changes in the API while it
is down, so no Ready transition is missed). Shared by the e2e fault tests and bench/faults.py.
"""

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from egpu_api import keys

DEPLOYMENT_LABEL = keys.DEPLOYMENT_LABEL


@dataclass
class PodRecord:
    uid: str
    deployment: str
    ready: bool


@dataclass
class PodLedger:
    """Replica pods of one namespace through a fault: the fewest Ready per deployment, and every
    pod that was deleted (by event or, across an outage, by its absence from the relisting)."""

    kubeconfig: Path
    namespace: str
    groups: Iterable[str]  # values of ``label`` to keep a minimum for
    label: str = DEPLOYMENT_LABEL  # the label that names a pod's group (deployment)
    pods: dict[str, PodRecord] = field(default_factory=dict)
    minimum: dict[str, int] = field(default_factory=dict)
    deleted: list[tuple[float, str, int]] = field(default_factory=list)  # (when, pod name, its group's Ready after)
    ready_at: dict[str, float] = field(default_factory=dict)  # pod name -> when first seen Ready
    reconnects: int = 0

    def __post_init__(self) -> None:
        from kubernetes import client

        from egpu_runtime.kube import api_client

        self._core: Any = client.CoreV1Api(api_client(self.kubeconfig))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-ledger", daemon=True)

    def __enter__(self) -> "PodLedger":
        self._thread.start()
        if not self._synced.wait(30):
            raise RuntimeError(f"could not list the pods of {self.namespace} within 30 s")
        with self._lock:
            self.minimum = {name: self._ready(name) for name in self.groups}
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def ready(self, name: str) -> int:
        with self._lock:
            return self._ready(name)

    def _ready(self, name: str) -> int:
        return sum(1 for pod in self.pods.values() if pod.deployment == name and pod.ready)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                version = self._relist()
                self._watch(version)
            except Exception:  # the API server is down or restarting: try again shortly
                self._stop.wait(0.5)
                self.reconnects += 1

    def _relist(self) -> str:
        listing = self._core.list_namespaced_pod(self.namespace, label_selector=self.label, _request_timeout=5)
        seen = {pod.metadata.name for pod in listing.items}
        with self._lock:
            for name in set(self.pods) - seen:
                self._gone(name)
            for pod in listing.items:
                self._record(pod)
        self._synced.set()
        return str(listing.metadata.resource_version)

    def _watch(self, version: str) -> None:
        from kubernetes import watch

        watcher: Any = watch.Watch()  # type: ignore[no-untyped-call]
        stream = watcher.stream(
            self._core.list_namespaced_pod, self.namespace, label_selector=self.label,
            resource_version=version, timeout_seconds=30, _request_timeout=60,
        )  # fmt: skip
        for event in stream:
            with self._lock:
                if event["type"] == "DELETED":
                    self._gone(event["object"].metadata.name)
                else:
                    self._record(event["object"])
            if self._stop.is_set():
                watcher.stop()

    def _record(self, pod: Any) -> None:
        conditions = (pod.status.conditions if pod.status else None) or []
        ready = pod.metadata.deletion_timestamp is None and any(c.type == "Ready" and c.status == "True" for c in conditions)
        name, deployment = pod.metadata.name, str((pod.metadata.labels or {}).get(self.label))
        self.pods[name] = PodRecord(pod.metadata.uid, deployment, ready)
        if ready:
            self.ready_at.setdefault(name, time.monotonic())
        self._note_minimum(deployment)

    def _gone(self, name: str) -> None:
        record = self.pods.pop(name, None)
        if record is not None:
            self.deleted.append((time.monotonic(), name, self._ready(record.deployment)))
            self._note_minimum(record.deployment)

    def _note_minimum(self, deployment: str) -> None:
        if deployment in self.minimum:
            self.minimum[deployment] = min(self.minimum[deployment], self._ready(deployment))
