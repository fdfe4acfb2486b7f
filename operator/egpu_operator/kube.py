"""The operator's only door to the API server (kopf's own watches aside). Plain dicts in and out."""

import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from egpu_api import keys
from egpu_operator.metrics import API_REQUESTS

log = logging.getLogger("egpu_operator.kube")
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
GROUP, VERSION, PLURAL = keys.API_GROUP, keys.API_VERSION, "inferencedeployments"


class Kube:
    def __init__(self, api_client: Any) -> None:
        self._core: Any = client.CoreV1Api(api_client)
        self._custom: Any = client.CustomObjectsApi(api_client)

    def create_pod(self, manifest: Mapping[str, Any]) -> bool:
        """Create a replica pod; False if it already exists (a restarted operator repeating itself)."""
        API_REQUESTS.labels("create").inc()
        try:
            _drained(self._core.create_namespaced_pod(manifest["metadata"]["namespace"], manifest, _preload_content=False))
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def delete_pod(self, namespace: str, name: str) -> None:
        API_REQUESTS.labels("delete").inc()
        try:
            _drained(self._core.delete_namespaced_pod(name, namespace, _preload_content=False))
        except ApiException as error:
            if error.status != 404:
                raise

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        API_REQUESTS.labels("patch").inc()
        _drained(
            self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": status}, _content_type=MERGE_PATCH, _preload_content=False
            )
        )

    def update_node_annotations(self, node: str, change: Callable[[Mapping[str, str]], Mapping[str, str]]) -> dict[str, str]:
        """Read-modify-write of a node's annotations with optimistic concurrency; returns what was written.

        ``change`` gets the current annotations and returns the values to set; the patch carries
        the resourceVersion it was computed from, so a concurrent writer makes it retry, not lose data.
        """
        for _ in range(5):
            API_REQUESTS.labels("get").inc()
            current = json.loads(self._core.read_node(node, _preload_content=False).data)
            annotations = current["metadata"].get("annotations") or {}
            wanted = dict(change(annotations))
            if all(annotations.get(key) == value for key, value in wanted.items()):
                return wanted
            body = {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"], "annotations": wanted}}
            API_REQUESTS.labels("patch").inc()
            try:
                _drained(self._core.patch_node(node, body, _content_type=MERGE_PATCH, _preload_content=False))
                return wanted
            except ApiException as error:
                if error.status != 409:
                    raise
        raise RuntimeError(f"node {node} kept changing while its power annotations were updated; will retry")

    def remove_finalizer(self, namespace: str, name: str, finalizer: str, finalizers: list[str]) -> None:
        if finalizer not in finalizers:
            return
        index = finalizers.index(finalizer)
        patch = [
            {"op": "test", "path": f"/metadata/finalizers/{index}", "value": finalizer},
            {"op": "remove", "path": f"/metadata/finalizers/{index}"},
        ]
        API_REQUESTS.labels("patch").inc()
        _drained(
            self._custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, patch, _content_type=JSON_PATCH, _preload_content=False
            )
        )

    def add_finalizer(self, namespace: str, name: str, finalizer: str) -> None:
        API_REQUESTS.labels("patch").inc()
        patch: list[dict[str, Any]] = [{"op": "add", "path": "/metadata/finalizers/-", "value": finalizer}]
        try:
            self._custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch, _content_type=JSON_PATCH)
        except ApiException as error:
            if error.status != 422:  # no finalizers list yet
                raise
            patch = [{"op": "add", "path": "/metadata/finalizers", "value": [finalizer]}]
            self._custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch, _content_type=JSON_PATCH)

    def event(self, deployment: Mapping[str, Any], reason: str, message: str, warning: bool = False) -> None:
        """An Event on the InferenceDeployment; best effort."""
        metadata = deployment["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body: dict[str, Any] = {
            "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "InferenceDeployment",
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata.get("uid"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "egpu-operator"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        API_REQUESTS.labels("create").inc()
        try:
            _drained(self._core.create_namespaced_event(metadata["namespace"], body, _preload_content=False))
        except ApiException as error:
            log.warning("could not record event", extra={"reason": reason, "status": error.status})


def _drained(response: Any) -> None:
    """Read and release a raw response we do not need: an unread response never returns its
    connection to the pool, and the next request then pays a new TLS handshake (it was 13% of
    the operator's CPU in bench/placement_scale.py before this)."""
    response.drain_conn()
