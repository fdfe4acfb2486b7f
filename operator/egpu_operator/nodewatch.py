"""The operator's view of Nodes: a plain list-and-watch in one thread, keeping slim copies.

Why not a kopf index like the other resources: Nodes change all the time (kubelet or KWOK
status, controllers' labels and taints), and kopf's per-event machinery (a worker per object,
indexing toggles, condition wake-ups) cost more CPU at 1,000 nodes than placement itself
(docs/measurements.md). Here an event costs one JSON parse and a hash: the slim copy (what
placement reads, ``slim``) replaces the stored one only when its placement facts changed, so
the facts cache in ``reconcile`` keeps hitting, and ``on_change`` fires only then.

The watch resumes from the last resourceVersion seen, relists when the server says it is too
old (410 Gone) and backs off on errors; it never blocks the event loop.
"""

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from egpu_api import keys

log = logging.getLogger("egpu_operator.nodewatch")
# The GPU assignments are kept so that a pod's GPU, once reported, brings its power limit at once.
KEPT_ANNOTATIONS = (
    keys.GPUS_ANNOTATION,
    keys.POWER_STATUS_ANNOTATION,
    keys.POWER_OWNERS_ANNOTATION,
    keys.GPU_ASSIGNMENTS_ANNOTATION,
)
WATCH_TIMEOUT_S = 300


def slim(node: Mapping[str, Any]) -> dict[str, Any]:
    """What placement needs of a Node: labels, the agent's annotations, cordon, taints, allocatable resources."""
    metadata, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
    annotations = metadata.get("annotations") or {}
    allocatable = status.get("allocatable") or {}
    return {
        "metadata": {
            "name": metadata.get("name", ""),
            "labels": dict(metadata.get("labels") or {}),
            "annotations": {key: annotations[key] for key in KEPT_ANNOTATIONS if key in annotations},
        },
        "spec": {
            "unschedulable": bool(spec.get("unschedulable")),
            "taints": [
                {key: taint.get(key) for key in ("key", "value", "effect")}
                for taint in spec.get("taints") or []
                if taint.get("effect") in ("NoSchedule", "NoExecute")
            ],
        },
        # The whole allocatable: whole-pod fit weighs CPU, memory, pods and every extended resource.
        "status": {"allocatable": dict(allocatable)},
    }


def placement_hash(node: Mapping[str, Any]) -> int:
    """What placement reads of a slim node, without its other labels. Controllers label nodes all
    the time (kube-controller-manager adds beta.kubernetes.io/* to every new node, rate-limited: at
    1,000 nodes that went on for a minute and re-queued every deployment each second). A change
    in other labels matters only to a nodeSelector and is picked up by the resync."""
    metadata = node["metadata"]
    ours = {key: value for key, value in metadata["labels"].items() if key.startswith(keys.PREFIX)}
    return hash(json.dumps([ours, metadata["annotations"], node["spec"], node["status"]], sort_keys=True))


class NodeWatch:
    """Slim copies of every Node, kept current by one thread. ``snapshot`` is safe from any thread."""

    def __init__(self, api_client: Any, on_change: Callable[[], None], on_gap: Callable[[], None] = lambda: None) -> None:
        """``on_gap``: called when the watch broke and events may have been missed (a relist)."""
        self._core: Any = client.CoreV1Api(api_client)
        self._on_change = on_change
        self._on_gap = on_gap
        self._nodes: dict[str, dict[str, Any]] = {}
        self._hashes: dict[str, int] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()  # the first full listing is in
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="egpu-node-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """name -> slim node; the dicts are never changed in place (a change replaces them)."""
        with self._lock:
            return dict(self._nodes)

    def _run(self) -> None:
        delay_s = 1.0
        while not self._stop.is_set():
            try:
                version = self._list()
                delay_s = 1.0
                while not self._stop.is_set():
                    version = self._watch(version)
            except ApiException as error:
                if error.status != 410:  # 410: our resourceVersion is too old; relist
                    log.warning("node watch failed", extra={"status": error.status, "retry_s": delay_s})
                    time.sleep(delay_s)
                    delay_s = min(30.0, delay_s * 2)
            except Exception as error:
                log.warning("node watch failed", extra={"error": str(error), "retry_s": delay_s})
                time.sleep(delay_s)
                delay_s = min(30.0, delay_s * 2)

    def _list(self) -> str:
        response = self._core.list_node(_preload_content=False)
        listing = json.loads(response.data)
        seen = set()
        changed = False
        for item in listing["items"]:
            seen.add(item["metadata"]["name"])
            changed |= self._store(item)
        with self._lock:
            for gone in set(self._nodes) - seen:
                del self._nodes[gone]
                del self._hashes[gone]
                changed = True
        if self.synced.is_set():
            self._on_gap()
            if changed:
                self._on_change()  # a relist after a gap: something may have happened meanwhile
        self.synced.set()
        return str(listing["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str:
        response = self._core.list_node(
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_TIMEOUT_S,
            _preload_content=False,
        )
        try:
            for line in _lines(response):
                event = json.loads(line)
                kind, item = event["type"], event["object"]
                if kind == "ERROR":
                    raise ApiException(status=int(item.get("code", 500)), reason=item.get("message", ""))
                version = item["metadata"]["resourceVersion"]
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    with self._lock:
                        self._nodes.pop(item["metadata"]["name"], None)
                        self._hashes.pop(item["metadata"]["name"], None)
                    self._on_change()
                elif self._store(item):
                    self._on_change()
                if self._stop.is_set():
                    break
        finally:
            response.release_conn()
        return version

    def _store(self, item: Mapping[str, Any]) -> bool:
        """Keep the node's slim copy if it changed; True when its placement facts changed."""
        node = slim(item)
        name = node["metadata"]["name"]
        with self._lock:
            if self._nodes.get(name) == node:
                return False  # status churn, heartbeats: nothing placement reads
        digest = placement_hash(node)
        with self._lock:
            self._nodes[name] = node
            changed, self._hashes[name] = self._hashes.get(name) != digest, digest
        return changed


def _lines(response: Any) -> Any:
    """Newline-delimited JSON from a streaming response, however the chunks fall."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=False):
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                yield line
    if pending.strip():
        yield pending
