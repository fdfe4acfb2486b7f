"""The pod for one replica, from the deployment's template. Pure.

One bare pod per replica, owned by the InferenceDeployment, pinned to the node placement
chose with required node affinity on ``metadata.name`` (as the DaemonSet controller pins
its pods), so kube-scheduler still checks capacity and binds it. Per-replica pods rather
than a Deployment let the operator choose each replica's node and, in maintenance, start a
replacement on another node before the old pod goes.

The startupProbe gets a failure budget of twice the estimated load time plus a minute:
fixed initial delays kill big models on slow links.
"""

import copy
import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

from egpu_api import keys
from egpu_api.inference import InferenceDeploymentSpec

LOAD_ESTIMATE_ANNOTATION = keys.ESTIMATED_LOAD_ANNOTATION
STARTUP_MARGIN_S = 60
STARTUP_FACTOR = 2


#: A pod name is also its hostname, which Kubernetes cuts at 63 characters.
POD_NAME_MAX = 63
#: Hex digits of the digest in names that had to be shortened; longer than the 5 of the full form,
#: so a shortened name can never equal the full-form name of another deployment.
_LONG_DIGEST = 10


def pod_name(deployment: str, replica: int, node: str) -> str:
    """Stable per (replica, node): re-creating after an operator restart finds the same name (409), no duplicate.

    ``{deployment}-{replica}-{digest of replica/node}`` when that fits in 63 characters. Otherwise the
    deployment part is cut and the digest also covers the whole deployment name, so two deployments
    sharing a long prefix still get different names."""
    digest = hashlib.sha256(f"{replica}/{node}".encode()).hexdigest()[:5]
    name = f"{deployment}-{replica}-{digest}"
    if len(name) <= POD_NAME_MAX:
        return name
    digest = hashlib.sha256(f"{deployment}/{replica}/{node}".encode()).hexdigest()[:_LONG_DIGEST]
    suffix = f"-{replica}-{digest}"
    # A DNS label may not end in "-" or "." before the suffix's own "-".
    return deployment[: POD_NAME_MAX - len(suffix)].rstrip("-.") + suffix


def startup_failure_threshold(load_seconds: float, period_s: int) -> int:
    return max(3, math.ceil((STARTUP_FACTOR * load_seconds + STARTUP_MARGIN_S) / max(1, period_s)))


def replica_spec(template: Mapping[str, Any], gpu_resource: str | None = keys.GPU_RESOURCE) -> dict[str, Any]:
    """The template's pod spec with one ``gpu_resource`` (a GPU, a shared GPU or a MIG slice: what
    placement chose on the node) unless the template asks for a GPU resource itself; None: without.
    Before the pin to a node: what placement checks against each node as the scheduler will."""
    pod_spec: dict[str, Any] = copy.deepcopy(template.get("spec") or {})
    containers = pod_spec.get("containers") or []
    asked = any(
        keys.is_gpu_resource(name)
        for container in containers
        for name in ((container.get("resources") or {}).get("limits") or {})
    )
    if containers and gpu_resource is not None and not asked:
        containers[0].setdefault("resources", {}).setdefault("limits", {})[gpu_resource] = "1"
    return pod_spec


def with_claim(pod_spec: dict[str, Any], claim: str) -> dict[str, Any]:
    """``pod_spec`` holding its GPU through ResourceClaim ``claim`` (DRA) instead of a resource: the
    claim in ``spec.resourceClaims`` and in the first container's ``resources.claims``."""
    pod_spec["resourceClaims"] = [{"name": keys.DRA_POD_CLAIM_NAME, "resourceClaimName": claim}]
    containers = pod_spec.get("containers") or []
    if containers:
        resources = containers[0].setdefault("resources", {})
        resources["claims"] = [*(resources.get("claims") or []), {"name": keys.DRA_POD_CLAIM_NAME}]
    return pod_spec


def resource_claim(
    deployment: Mapping[str, Any], pod: Mapping[str, Any], device_path: str, device_uuid: str, device_class: str
) -> dict[str, Any]:
    """The ResourceClaim of a DRA replica ``pod``: one device of ``device_class``, selected by the uuid
    of the device placement chose (``device_path``: driver/pool/device). Named as the pod, with its
    labels, owned by the deployment; the operator deletes it once the pod is gone."""
    driver = device_path.split("/", 1)[0]
    pod_meta = pod["metadata"]
    selector = f"device.driver == '{driver}' && device.attributes['{driver}'].{keys.DRA_UUID_ATTRIBUTE} == '{device_uuid}'"
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {
            "name": pod_meta["name"],
            "namespace": pod_meta["namespace"],
            "labels": dict(pod_meta["labels"]),
            "annotations": {keys.DRA_DEVICE_ANNOTATION: device_path},
            "ownerReferences": [owner_reference(deployment["metadata"])],
        },
        "spec": {
            "devices": {
                "requests": [
                    {
                        "name": keys.DRA_POD_CLAIM_NAME,
                        "exactly": {"deviceClassName": device_class, "selectors": [{"cel": {"expression": selector}}]},
                    }
                ]
            }
        },
    }


def replica_labels(template: Mapping[str, Any], deployment: str) -> dict[str, str]:
    """The labels every replica pod of ``deployment`` carries (the replica number aside)."""
    return {**((template.get("metadata") or {}).get("labels") or {}), keys.DEPLOYMENT_LABEL: deployment}


def pinned(affinity: Mapping[str, Any] | None, node: str) -> dict[str, Any]:
    """``affinity`` with its required node affinity narrowed to ``node``: the pin is added to each of
    the template's own terms (terms are ORed), so the template's constraints still hold."""
    pin = {"key": "metadata.name", "operator": "In", "values": [node]}
    node_affinity = dict((affinity or {}).get("nodeAffinity") or {})
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms = [dict(term) for term in required.get("nodeSelectorTerms") or []] or [{}]
    for term in terms:
        term["matchFields"] = [*(term.get("matchFields") or []), pin]
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": terms}
    return {**(affinity or {}), "nodeAffinity": node_affinity}


def replica_pod(
    deployment: Mapping[str, Any],
    replica: int,
    node: str,
    load_seconds: float,
    vram_mib: int | None = None,
    gpu_resource: str = keys.GPU_RESOURCE,
    dra: bool = False,
) -> dict[str, Any]:
    """``dra``: the GPU comes through a ResourceClaim named as the pod (``resource_claim``), not ``gpu_resource``.

    The door for a deployment as a plain dict (tooling, tests); the controller uses ``replica_pod_of``."""
    spec = deployment["spec"]
    tolerations = (spec.get("placement") or {}).get("tolerations") or []
    return _replica_pod(
        deployment["metadata"], spec.get("template") or {}, tolerations, replica, node, load_seconds, vram_mib, gpu_resource, dra
    )


def replica_pod_of(
    metadata: Mapping[str, Any],
    spec: InferenceDeploymentSpec,
    replica: int,
    node: str,
    load_seconds: float,
    vram_mib: int | None = None,
    gpu_resource: str = keys.GPU_RESOURCE,
    dra: bool = False,
) -> dict[str, Any]:
    """``replica_pod`` from the typed spec."""
    tolerations = spec.placement.tolerations
    return _replica_pod(metadata, spec.template, tolerations, replica, node, load_seconds, vram_mib, gpu_resource, dra)


def _replica_pod(
    metadata: Mapping[str, Any],
    template: Mapping[str, Any],
    tolerations: Sequence[Mapping[str, Any]],
    replica: int,
    node: str,
    load_seconds: float,
    vram_mib: int | None,
    gpu_resource: str,
    dra: bool,
) -> dict[str, Any]:
    pod_spec = replica_spec(template, None if dra else gpu_resource)
    if dra:
        with_claim(pod_spec, pod_name(metadata["name"], replica, node))
    template_meta = copy.deepcopy(template.get("metadata") or {})
    name = metadata["name"]

    for container in pod_spec.get("containers") or []:
        probe = container.get("startupProbe")
        if probe is not None:
            probe["failureThreshold"] = startup_failure_threshold(load_seconds, int(probe.get("periodSeconds", 10)))
    pod_spec["affinity"] = pinned(pod_spec.get("affinity"), node)
    if tolerations:
        pod_spec["tolerations"] = [*(pod_spec.get("tolerations") or []), *copy.deepcopy(list(tolerations))]

    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(name, replica, node),
            "namespace": metadata["namespace"],
            "labels": {**replica_labels(template, name), keys.REPLICA_LABEL: str(replica)},
            "annotations": {
                **(template_meta.get("annotations") or {}),
                LOAD_ESTIMATE_ANNOTATION: f"{load_seconds:.1f}",
                **({keys.VRAM_ANNOTATION: str(vram_mib)} if vram_mib is not None else {}),
            },
            "ownerReferences": [owner_reference(metadata)],
        },
        "spec": pod_spec,
    }


def disruption_budget(deployment: Mapping[str, Any], min_available: int) -> dict[str, Any]:
    """The deployment's PodDisruptionBudget, owned by it so deletion cleans it up."""
    metadata = deployment["metadata"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "labels": {keys.DEPLOYMENT_LABEL: metadata["name"]},
            "ownerReferences": [owner_reference(metadata)],
        },
        "spec": {"minAvailable": min_available, "selector": {"matchLabels": {keys.DEPLOYMENT_LABEL: metadata["name"]}}},
    }


def owner_reference(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The deployment as controller owner: its pods and budget go when it goes."""
    return {
        "apiVersion": f"{keys.API_GROUP}/{keys.API_VERSION}",
        "kind": "InferenceDeployment",
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
