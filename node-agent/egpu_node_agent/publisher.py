"""The node agent's only door to the API server: its own node, its Lease, its Events.

``Publisher`` is the seam the agent's poll loop is written against; ``NodePublisher`` is the
Kubernetes implementation, ``fake_publisher.FakePublisher`` the one kept in memory for tests.

The agent may change only its own node and, on it, only keys under the project prefix;
every write here goes to ``node_name`` and ``diff`` drops foreign keys, so it never even
attempts more (the chart's admission policy enforces it on top).

A watch keeps the latest Node in memory, so deciding whether to publish costs no request:
at steady state the agent sends no patch at all, only the Lease renewal.
"""

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from egpu_api import keys
from egpu_runtime import conditions, events, timestamps

log = logging.getLogger("egpu_node_agent.publisher")
_watch_module: Any = watch  # untyped
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


def diff(
    current: Mapping[str, str], desired: Mapping[str, str | None], owned: frozenset[str] | None = None
) -> dict[str, str | None]:
    """A merge patch taking ``current`` to ``desired`` for project keys; None deletes a key.

    Keys outside the project prefix are never part of the patch. With ``owned``, keys in it
    that ``desired`` lacks are deleted (labels the agent no longer computes).
    """
    patch: dict[str, str | None] = {}
    for key, value in desired.items():
        if key.startswith(keys.PREFIX) and current.get(key) != value and not (value is None and key not in current):
            patch[key] = value
    for key in owned or ():
        if key in current and key not in desired:
            patch[key] = None
    return patch


class Publisher(Protocol):
    """What the agent's poll loop needs of the API server, for its own node only.

    Contract (what the agent relies on):
    - ``labels()`` and ``annotations()`` are the node's as last seen, without a request: the power
      request is read from them, and they are what ``publish`` diffs against.
    - ``publish(labels, annotations)`` writes only the project keys that differ (``diff``) and says
      whether it wrote; ``labels`` None leaves the labels alone. On an API error it raises and
      remembers nothing, so the next poll sends the same patch again: that is the retry.
    - ``set_condition(healthy, ...)`` keeps the GPUHealthy node condition (``None``: Unknown, the
      GPUs could not be read); writes only on a change; raises on an API error.
    - ``heartbeat(duration_s)`` renews (or creates) the agent's Lease; raises on an API error.
    - ``event(...)`` is best effort and never raises: an Event lost is only logged.
    - ``changed`` is set when the node changes under the agent (a new power request), so the loop
      wakes early; the loop clears it. ``patches`` counts the writes to the node.
    """

    changed: threading.Event
    patches: int

    def labels(self) -> dict[str, str]: ...

    def annotations(self) -> dict[str, str]: ...

    def publish(self, labels: Mapping[str, str] | None, annotations: Mapping[str, str | None]) -> bool: ...

    def set_condition(self, healthy: bool | None, reason: str, message: str) -> bool: ...

    def heartbeat(self, duration_s: int) -> None: ...

    def event(self, reason: str, message: str, warning: bool = True) -> None: ...

    def close(self) -> None: ...


def condition_status(healthy: bool | None) -> str:
    """A node condition's status: None is "Unknown", which no consumer may read as healthy."""
    return "Unknown" if healthy is None else "True" if healthy else "False"


class NodePublisher:
    """``Publisher`` through the Kubernetes API: reads and writes one node, its Lease, its Events."""

    def __init__(self, api_client: Any, node_name: str, namespace: str) -> None:
        self.node_name = node_name
        self.namespace = namespace
        # Raw dicts in, raw JSON out (_preload_content=False): the agent handles plain data, not models.
        self._core: Any = client.CoreV1Api(api_client)
        self._leases: Any = client.CoordinationV1Api(api_client)
        self._apps: Any = client.AppsV1Api(api_client)
        self._node: dict[str, Any] = self._get_node()
        self._lock = threading.Lock()
        self.changed = threading.Event()  # set when the watch sees our node change
        self.patches = 0
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name=f"watch-{node_name}", daemon=True)
        self._watcher.start()

    # -- reading -------------------------------------------------------------------------------

    def node(self) -> dict[str, Any]:
        with self._lock:
            return self._node

    def labels(self) -> dict[str, str]:
        return dict(self.node()["metadata"].get("labels") or {})

    def annotations(self) -> dict[str, str]:
        return dict(self.node()["metadata"].get("annotations") or {})

    def daemonset(self, name: str) -> tuple[dict[str, Any] | None, int | None]:
        """The agent's own DaemonSet in its namespace, and None or the HTTP status of a failed read
        (``(None, None)``: it does not exist). Read once, when the agent stops."""
        try:
            response = self._apps.read_namespaced_daemon_set(name, self.namespace, _preload_content=False)
        except ApiException as error:
            return None, None if error.status == 404 else int(error.status or 0)
        except Exception:  # no answer at all (connection refused): unknown
            return None, 0
        return dict(json.loads(response.data)), None

    # -- writing -------------------------------------------------------------------------------

    def publish(self, labels: Mapping[str, str] | None, annotations: Mapping[str, str | None]) -> bool:
        """Patch the node's project labels and annotations if they differ; return whether it patched.
        ``labels`` None leaves the labels as they are (``{}`` would remove every label the agent owns)."""
        label_patch = diff(self.labels(), labels, keys.NODE_AGENT_LABELS) if labels is not None else {}
        annotation_patch = diff(self.annotations(), annotations)
        if not label_patch and not annotation_patch:
            return False
        metadata: dict[str, Any] = {}
        if label_patch:
            metadata["labels"] = label_patch
        if annotation_patch:
            metadata["annotations"] = annotation_patch
        response = self._core.patch_node(
            self.node_name, {"metadata": metadata}, _content_type=MERGE_PATCH, _preload_content=False
        )
        self._remember(json.loads(response.data))
        self.patches += 1
        log.info(
            "published node metadata",
            extra={"node": self.node_name, "changed": sorted({**label_patch, **annotation_patch})},
        )
        return True

    def set_condition(self, healthy: bool | None, reason: str, message: str) -> bool:
        """Keep the GPUHealthy node condition; patches only when status, reason or message change."""
        status = condition_status(healthy)
        current = conditions.find(self.node().get("status", {}).get("conditions") or [], keys.GPU_HEALTHY_CONDITION)
        if current and (current.get("status"), current.get("reason"), current.get("message")) == (
            status,
            reason,
            message,
        ):
            return False
        now = timestamps.now()
        condition = {
            "type": keys.GPU_HEALTHY_CONDITION,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": conditions.transition_time(current, status, now),
        }
        response = self._core.patch_node_status(
            self.node_name,
            {"status": {"conditions": [condition]}},
            _content_type=STRATEGIC_MERGE_PATCH,
            _preload_content=False,
        )
        self._remember(json.loads(response.data))
        self.patches += 1
        return True

    def heartbeat(self, duration_s: int) -> None:
        """Renew (or create) this agent's Lease, so the operator can tell a dead agent from a quiet one."""
        name = f"{keys.AGENT_LEASE_PREFIX}{self.node_name}"
        spec = {"holderIdentity": self.node_name, "leaseDurationSeconds": duration_s, "renewTime": timestamps.now(micro=True)}
        try:
            self._leases.patch_namespaced_lease(
                name, self.namespace, {"spec": spec}, _content_type=MERGE_PATCH, _preload_content=False
            ).drain_conn()  # release the connection to the pool; we need no reply
        except ApiException as error:
            if error.status != 404:
                raise
            body = {"metadata": {"name": name, "labels": {keys.FLEET_NODE_LABEL: self.node_name}}, "spec": spec}
            self._leases.create_namespaced_lease(self.namespace, body)

    def event(self, reason: str, message: str, warning: bool = True) -> None:
        """Record a Kubernetes Event on the node (best effort: an event that fails is only logged)."""
        involved = events.involved("v1", "Node", self.node()["metadata"])
        body = events.event("default", involved, reason, message, warning, "egpu-node-agent", host=self.node_name)
        try:
            self._core.create_namespaced_event("default", body, _preload_content=False).drain_conn()
        except ApiException as error:
            log.warning("could not record event", extra={"node": self.node_name, "reason": reason, "status": error.status})

    def close(self) -> None:
        self._stop.set()

    # -- internals -----------------------------------------------------------------------------

    def _get_node(self) -> dict[str, Any]:
        response = self._core.read_node(self.node_name, _preload_content=False)
        return dict(json.loads(response.data))

    def _remember(self, node: dict[str, Any]) -> None:
        with self._lock:
            # A watch event may be newer than our patch response; keep whichever is later.
            if int(node["metadata"]["resourceVersion"]) >= int(self._node["metadata"]["resourceVersion"]):
                self._node = node

    def _watch(self) -> None:
        while not self._stop.is_set():
            stream: Any = _watch_module.Watch()
            try:
                for event in stream.stream(
                    self._core.list_node,
                    field_selector=f"metadata.name={self.node_name}",
                    resource_version=self.node()["metadata"]["resourceVersion"],
                    timeout_seconds=60,
                ):
                    if self._stop.is_set():
                        break
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._remember(event["raw_object"])
                        self.changed.set()
            except Exception as error:
                log.debug("node watch restarts", extra={"node": self.node_name, "error": str(error)})
                if self._stop.wait(1):
                    return
                try:
                    self._remember(self._get_node())
                except Exception:
                    continue
            finally:
                stream.stop()
