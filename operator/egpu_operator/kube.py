"""The operator's only door to the API server (kopf's own watches aside). Plain dicts in and out.

``Kube`` is the seam the controllers are written against (as httpx's ``BaseTransport``):
``ApiKube`` talks to a real API server, ``egpu_operator.fakekube.FakeKube`` keeps the objects
in memory for unit tests. Each method's docstring is its contract; both keep it.
"""

import copy
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from egpu_api import keys
from egpu_operator.leader import LeaseUnreadable
from egpu_operator.metrics import API_REQUESTS, EVICTIONS
from egpu_operator.workqueue import Backoff
from egpu_runtime import events

log = logging.getLogger("egpu_operator.kube")
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
GROUP, VERSION, PLURAL = keys.API_GROUP, keys.API_VERSION, "inferencedeployments"
MAINTENANCES = "gpumaintenances"


class PodRefused(Exception):
    """The API server refused a pod for good (invalid, forbidden, over quota); ``str()`` is its message."""


class StatusRefused(Exception):
    """The API server refused a status write (400 or 422: the status schema cannot hold it); ``str()`` is its message."""


class Kube(Protocol):
    """What the controllers ask of the API server."""

    def evict_pod(self, namespace: str, name: str) -> str | None:
        """Evict through the Eviction API; None when done (or already gone), else why it was refused
        (a PodDisruptionBudget would break). Never force-deletes."""
        ...

    def pods_on_node(self, node: str) -> list[dict[str, Any]]:
        """Every pod bound to ``node``, in any namespace."""
        ...

    def get_node(self, node: str) -> dict[str, Any] | None:
        """The whole Node, or None when there is none of that name."""
        ...

    def patch_node(self, node: str, patch: Mapping[str, Any]) -> None:
        """A JSON merge patch of the Node (None deletes a key)."""
        ...

    def update_node_annotations(self, node: str, change: Callable[[Mapping[str, str]], Mapping[str, str]]) -> dict[str, str]:
        """Read-modify-write of a node's annotations: ``change`` gets the current ones and returns
        the values to set; a concurrent writer makes it try again, never lose data."""
        ...

    def list_maintenances(self) -> list[dict[str, Any]]: ...

    def create_maintenance(self, body: Mapping[str, Any]) -> bool:
        """False if it exists already (its name is deterministic)."""
        ...

    def patch_maintenance_status(self, name: str, status: Mapping[str, Any]) -> None:
        """A merge patch of the GPUMaintenance's status subresource."""
        ...

    def set_maintenance_finalizers(self, name: str, resource_version: str, finalizers: list[str]) -> None:
        """Replace the finalizer list, guarded by resourceVersion."""
        ...

    def maintenance_event(self, maintenance: Mapping[str, Any], reason: str, message: str, warning: bool = False) -> None:
        """An Event about a GPUMaintenance; best effort."""
        ...

    def apply_pdb(self, manifest: Mapping[str, Any]) -> None:
        """Create the PodDisruptionBudget, or bring an existing one to ``manifest``."""
        ...

    def delete_pdb(self, namespace: str, name: str) -> None:
        """Delete it; gone already is fine."""
        ...

    def apply_service(self, manifest: Mapping[str, Any], exists: bool) -> str | None:
        """Create the Service (``exists``: the index holds one of that name already), or bring one this
        deployment controls to ``manifest``'s labels, owner, type, selector and ports, keeping what
        else it holds (clusterIP, other labels). None when done; else why not: a Service of that name
        that the deployment does not control is left alone."""
        ...

    def delete_service(self, namespace: str, name: str) -> None:
        """Delete it; gone already is fine."""
        ...

    def create_pod(self, manifest: Mapping[str, Any]) -> bool:
        """Create a pod; False if it already exists. ``PodRefused`` when admission says no for good."""
        ...

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete it; gone already is fine."""
        ...

    def create_resource_claim(self, manifest: Mapping[str, Any]) -> bool:
        """Create a DRA replica's ResourceClaim; False if it exists. ``PodRefused`` when admission says no."""
        ...

    def delete_resource_claim(self, namespace: str, name: str) -> None:
        """Delete it; gone already is fine."""
        ...

    def get_resource_claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ResourceClaim, or None when there is none."""
        ...

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """A merge patch of the InferenceDeployment's status subresource."""
        ...

    def add_finalizer(self, namespace: str, name: str, finalizer: str) -> None:
        """Append ``finalizer`` to the InferenceDeployment's finalizers."""
        ...

    def remove_finalizer(self, namespace: str, name: str, finalizer: str, finalizers: list[str]) -> None:
        """Remove ``finalizer``, guarded by its position in ``finalizers`` (what was read)."""
        ...

    def event(self, deployment: Mapping[str, Any], reason: str, message: str, warning: bool = False) -> None:
        """An Event on the InferenceDeployment; best effort."""
        ...


class Evictor:
    """Every eviction the controllers make, with one backoff per pod whoever asks.

    A pod's InferenceDeployment and a GPUMaintenance of its node may both want it gone. After a
    refusal (a PodDisruptionBudget said no) neither asks again before the pod's backoff has passed
    (2, 4, 8 ... 60 s, ``workqueue.Backoff``): they get the last refusal instead, and the budget
    is not asked twice as often because two controllers care. Safe from any thread.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, backoff: Backoff | None = None) -> None:
        self._clock = clock
        self._backoff = backoff or Backoff()
        self._lock = threading.Lock()
        self._refused: dict[str, tuple[float, str]] = {}  # namespace/name -> (next try, last refusal)

    def evict(self, kube: Kube, namespace: str, name: str, controller: str) -> str | None:
        """Evict through ``kube``; None once evicted (or gone), else why not (the API server's
        refusal, or the last one while the pod's backoff runs). ``controller`` labels the metric."""
        key = f"{namespace}/{name}"
        with self._lock:
            next_try, last = self._refused.get(key, (0.0, ""))
            if self._clock() < next_try:
                return last
        refusal = kube.evict_pod(namespace, name)
        EVICTIONS.labels(controller, "refused" if refusal else "evicted").inc()
        with self._lock:
            if refusal is None:
                self._refused.pop(key, None)
                self._backoff.forget(key)
            else:
                self._refused[key] = (self._clock() + self._backoff.failed(key), refusal)
        return refusal


class ApiKube:
    """``Kube`` against a real API server, through the kubernetes client."""

    def __init__(self, api_client: Any) -> None:
        self._core: Any = client.CoreV1Api(api_client)
        self._custom: Any = client.CustomObjectsApi(api_client)
        self._policy: Any = client.PolicyV1Api(api_client)

    # -- pods --------------------------------------------------------------------------------------

    def evict_pod(self, namespace: str, name: str) -> str | None:
        """Evict through the Eviction API; None when done (or already gone), else why it was refused.

        The API server refuses (429) an eviction that would break a PodDisruptionBudget; the
        caller tries again later. Any other answer but 404 is a refusal too, quoted: two budgets
        over one pod make every eviction a 500 ("more than one PodDisruptionBudget"), and as an
        exception it would skip the maintenance's status and the eviction backoff, retried at
        once. Nothing here ever force-deletes.
        """
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}
        API_REQUESTS.labels("evict").inc()
        try:
            _drained(self._core.create_namespaced_pod_eviction(name, namespace, body, _preload_content=False))
        except ApiException as error:
            if error.status == 404:
                return None
            if error.status == 429:
                return _api_message(error) or "refused by a PodDisruptionBudget"
            return eviction_refusal(error.status, _api_message(error) or str(error.reason or ""))
        return None

    def pods_on_node(self, node: str) -> list[dict[str, Any]]:
        API_REQUESTS.labels("list").inc()
        response = self._core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}", _preload_content=False)
        items: list[dict[str, Any]] = json.loads(response.data)["items"]
        return items

    # -- nodes -------------------------------------------------------------------------------------

    def get_node(self, node: str) -> dict[str, Any] | None:
        API_REQUESTS.labels("get").inc()
        try:
            return dict(json.loads(self._core.read_node(node, _preload_content=False).data))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def patch_node(self, node: str, patch: Mapping[str, Any]) -> None:
        API_REQUESTS.labels("patch").inc()
        _drained(self._core.patch_node(node, patch, _content_type=MERGE_PATCH, _preload_content=False))

    # -- GPUMaintenance ----------------------------------------------------------------------------

    def list_maintenances(self) -> list[dict[str, Any]]:
        API_REQUESTS.labels("list").inc()
        response = self._custom.list_cluster_custom_object(GROUP, VERSION, MAINTENANCES, _preload_content=False)
        items: list[dict[str, Any]] = json.loads(response.data)["items"]
        return items

    def create_maintenance(self, body: Mapping[str, Any]) -> bool:
        """False if it exists already (its name is deterministic)."""
        API_REQUESTS.labels("create").inc()
        try:
            _drained(self._custom.create_cluster_custom_object(GROUP, VERSION, MAINTENANCES, body, _preload_content=False))
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def patch_maintenance_status(self, name: str, status: Mapping[str, Any]) -> None:
        API_REQUESTS.labels("patch").inc()
        _drained(
            self._custom.patch_cluster_custom_object_status(
                GROUP, VERSION, MAINTENANCES, name, {"status": status}, _content_type=MERGE_PATCH, _preload_content=False
            )
        )

    def set_maintenance_finalizers(self, name: str, resource_version: str, finalizers: list[str]) -> None:
        """Replace the finalizer list, guarded by resourceVersion so a concurrent edit is not lost."""
        API_REQUESTS.labels("patch").inc()
        body = {"metadata": {"resourceVersion": resource_version, "finalizers": finalizers}}
        _drained(
            self._custom.patch_cluster_custom_object(
                GROUP, VERSION, MAINTENANCES, name, body, _content_type=MERGE_PATCH, _preload_content=False
            )
        )

    def maintenance_event(self, maintenance: Mapping[str, Any], reason: str, message: str, warning: bool = False) -> None:
        """Events of a cluster-scoped object live in the default namespace, as kubectl expects."""
        self._event("default", maintenance, "GPUMaintenance", reason, message, warning)

    # -- PodDisruptionBudgets ----------------------------------------------------------------------

    def apply_pdb(self, manifest: Mapping[str, Any]) -> None:
        """Create the deployment's PodDisruptionBudget, or bring an existing one to ``manifest``."""
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        API_REQUESTS.labels("create").inc()
        try:
            _drained(self._policy.create_namespaced_pod_disruption_budget(namespace, manifest, _preload_content=False))
        except ApiException as error:
            if error.status != 409:
                raise
            API_REQUESTS.labels("patch").inc()
            patch = {"spec": manifest["spec"], "metadata": {"labels": manifest["metadata"]["labels"]}}
            _drained(
                self._policy.patch_namespaced_pod_disruption_budget(
                    name, namespace, patch, _content_type=MERGE_PATCH, _preload_content=False
                )
            )

    def delete_pdb(self, namespace: str, name: str) -> None:
        API_REQUESTS.labels("delete").inc()
        try:
            _drained(self._policy.delete_namespaced_pod_disruption_budget(name, namespace, _preload_content=False))
        except ApiException as error:
            if error.status != 404:
                raise

    # -- Services ----------------------------------------------------------------------------------

    def apply_service(self, manifest: Mapping[str, Any], exists: bool) -> str | None:
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        if not exists:
            API_REQUESTS.labels("create").inc()
            try:
                _drained(self._core.create_namespaced_service(namespace, manifest, _preload_content=False))
                return None
            except ApiException as error:
                if error.status != 409:
                    raise
        API_REQUESTS.labels("get").inc()
        try:
            current = json.loads(self._core.read_namespaced_service(name, namespace, _preload_content=False).data)
        except ApiException as error:
            if error.status == 404:  # deleted since the index saw it: the next reconcile creates it
                raise RuntimeError(f"service {namespace}/{name} went away while it was updated; will retry") from None
            raise
        wanted_owner = manifest["metadata"]["ownerReferences"][0]
        owner = next((o for o in current["metadata"].get("ownerReferences") or [] if o.get("controller")), None)
        if owner is not None and owner.get("uid") != wanted_owner["uid"]:
            return f"a Service named {name} exists and is controlled by {owner.get('kind')} {owner.get('name')}; rename one"
        if owner is None and keys.DEPLOYMENT_LABEL not in (current["metadata"].get("labels") or {}):
            return f"a Service named {name} exists and is not this deployment's; delete or rename it"
        updated = copy.deepcopy(current)
        updated["metadata"]["labels"] = {**(current["metadata"].get("labels") or {}), **manifest["metadata"]["labels"]}
        others = [o for o in current["metadata"].get("ownerReferences") or [] if o.get("uid") != wanted_owner["uid"]]
        updated["metadata"]["ownerReferences"] = [*others, wanted_owner]
        updated["spec"].update({key: manifest["spec"][key] for key in ("type", "selector", "ports")})
        if updated == current:
            return None
        API_REQUESTS.labels("update").inc()
        # A replace carrying the resourceVersion it read: a concurrent edit makes it fail (409) and retry.
        _drained(self._core.replace_namespaced_service(name, namespace, updated, _preload_content=False))
        return None

    def delete_service(self, namespace: str, name: str) -> None:
        API_REQUESTS.labels("delete").inc()
        try:
            _drained(self._core.delete_namespaced_service(name, namespace, _preload_content=False))
        except ApiException as error:
            if error.status != 404:
                raise

    def create_pod(self, manifest: Mapping[str, Any]) -> bool:
        """Create a replica pod; False if it already exists (a restarted operator repeating itself).

        ``PodRefused`` when admission says no (400 invalid, 403 forbidden or over quota, 422
        Pod Security or validation): retrying at once would only say no again."""
        API_REQUESTS.labels("create").inc()
        try:
            _drained(self._core.create_namespaced_pod(manifest["metadata"]["namespace"], manifest, _preload_content=False))
        except ApiException as error:
            if error.status == 409:
                return False
            if error.status in (400, 403, 422):
                raise PodRefused(_api_message(error) or f"HTTP {error.status} {error.reason}") from None
            raise
        return True

    def delete_pod(self, namespace: str, name: str) -> None:
        API_REQUESTS.labels("delete").inc()
        try:
            _drained(self._core.delete_namespaced_pod(name, namespace, _preload_content=False))
        except ApiException as error:
            if error.status != 404:
                raise

    # -- DRA resource claims -----------------------------------------------------------------------

    def create_resource_claim(self, manifest: Mapping[str, Any]) -> bool:
        API_REQUESTS.labels("create").inc()
        try:
            where = _claims(manifest["metadata"]["namespace"])
            _drained(self._custom.create_namespaced_custom_object(**where, body=manifest, _preload_content=False))
        except ApiException as error:
            if error.status == 409:
                return False
            if error.status in (400, 403, 422):
                raise PodRefused(_api_message(error) or f"HTTP {error.status} {error.reason}") from None
            raise
        return True

    def delete_resource_claim(self, namespace: str, name: str) -> None:
        API_REQUESTS.labels("delete").inc()
        try:
            _drained(self._custom.delete_namespaced_custom_object(**_claims(namespace), name=name, _preload_content=False))
        except ApiException as error:
            if error.status != 404:
                raise

    def get_resource_claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        API_REQUESTS.labels("get").inc()
        try:
            response = self._custom.get_namespaced_custom_object(**_claims(namespace), name=name, _preload_content=False)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(json.loads(response.data))

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """``StatusRefused`` when the API server will not store it (the same write would fail again)."""
        API_REQUESTS.labels("patch").inc()
        try:
            _drained(
                self._custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, PLURAL, name, {"status": status}, _content_type=MERGE_PATCH, _preload_content=False
                )
            )
        except ApiException as error:
            if error.status in (400, 422):
                raise StatusRefused(_api_message(error) or f"HTTP {error.status} {error.reason}") from None
            raise

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
        self._event(deployment["metadata"]["namespace"], deployment, "InferenceDeployment", reason, message, warning)

    def _event(self, namespace: str, subject: Mapping[str, Any], kind: str, reason: str, message: str, warning: bool) -> None:
        involved = events.involved(f"{GROUP}/{VERSION}", kind, subject["metadata"])
        body = events.event(namespace, involved, reason, message, warning, "egpu-operator")
        API_REQUESTS.labels("create").inc()
        try:
            _drained(self._core.create_namespaced_event(namespace, body, _preload_content=False))
        except ApiException as error:
            log.warning("could not record event", extra={"reason": reason, "status": error.status})


class ApiLeases:
    """``leader.LeaseApi`` against a real API server: the release's leader Lease and the cluster
    claim on the InferenceDeployment CRD. Short timeouts: a round must not outlast the renew deadline."""

    TIMEOUT_S = 5.0

    def __init__(self, api_client: Any) -> None:
        self._leases: Any = client.CoordinationV1Api(api_client)
        self._crds: Any = client.ApiextensionsV1Api(api_client)

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            response = self._leases.read_namespaced_lease(
                name, namespace, _preload_content=False, _request_timeout=self.TIMEOUT_S
            )
        except ApiException as error:
            if error.status == 404:
                return None
            if error.status == 403:
                raise LeaseUnreadable(f"reading the Lease {namespace}/{name} is forbidden") from error
            raise
        return dict(json.loads(response.data))

    def create_lease(self, namespace: str, name: str, spec: Mapping[str, Any]) -> bool:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name}, "spec": dict(spec)}
        return self._conditional(
            lambda: self._leases.create_namespaced_lease(namespace, body, _preload_content=False, _request_timeout=self.TIMEOUT_S)
        )

    def update_lease(self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str) -> bool:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": resource_version},
            "spec": dict(spec),
        }
        return self._conditional(
            lambda: self._leases.replace_namespaced_lease(
                name, namespace, body, _preload_content=False, _request_timeout=self.TIMEOUT_S
            )
        )

    def get_claim(self) -> tuple[str | None, str] | None:
        try:
            response = self._crds.read_custom_resource_definition(
                keys.CLAIM_CRD, _preload_content=False, _request_timeout=self.TIMEOUT_S
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        metadata = json.loads(response.data)["metadata"]
        return (metadata.get("annotations") or {}).get(keys.OPERATOR_LEASE_ANNOTATION), str(metadata["resourceVersion"])

    def set_claim(self, value: str, resource_version: str) -> bool:
        # A resourceVersion in a merge patch is a precondition: two releases cannot both take the claim.
        patch = {"metadata": {"resourceVersion": resource_version, "annotations": {keys.OPERATOR_LEASE_ANNOTATION: value}}}
        return self._conditional(
            lambda: self._crds.patch_custom_resource_definition(
                keys.CLAIM_CRD, patch, _content_type=MERGE_PATCH, _preload_content=False, _request_timeout=self.TIMEOUT_S
            )
        )

    @staticmethod
    def _conditional(write: Callable[[], Any]) -> bool:
        """True when written; False on 409 (it exists, or changed since it was read)."""
        try:
            _drained(write())
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True


def _claims(namespace: str) -> dict[str, str]:
    """Where DRA's ResourceClaims of ``namespace`` are, for the client's generic object calls."""
    return {"group": "resource.k8s.io", "version": "v1", "namespace": namespace, "plural": "resourceclaims"}


def eviction_refusal(status: int | None, message: str) -> str:
    """One line for an eviction the API server answered with an error other than 404 or 429."""
    said = message.strip().rstrip(".") or "no message"
    return f"the API server refused the eviction (HTTP {status}): {said}"


def _api_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message", ""))
    except ValueError:
        return ""


def _drained(response: Any) -> None:
    """Read and release a raw response we do not need: an unread response never returns its
    connection to the pool, and the next request then pays a new TLS handshake (it was 13% of
    the operator's CPU in bench/placement_scale.py before this)."""
    response.drain_conn()


class ApiCrds:
    """``supervisor.CrdApi`` against a real API server: a GET of one CRD by name (the chart grants
    ``get`` on the operator's own CRDs only, by resourceNames; no list or watch of CRDs)."""

    TIMEOUT_S = 5.0

    def __init__(self, api_client: Any) -> None:
        self._crds: Any = client.ApiextensionsV1Api(api_client)

    def crd_uid(self, name: str) -> str | None:
        try:
            response = self._crds.read_custom_resource_definition(name, _preload_content=False, _request_timeout=self.TIMEOUT_S)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return str(json.loads(response.data)["metadata"]["uid"])
