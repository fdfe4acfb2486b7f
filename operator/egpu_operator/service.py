"""The Service of an InferenceDeployment with ``spec.service``: wanted manifest, index view, comparison.

One ClusterIP Service per deployment, named like it, selecting exactly its replica pods by the
label the operator puts on each (``keys.DEPLOYMENT_LABEL``), and owned by it so the garbage
collector deletes it with the deployment. The kube-controller-manager's EndpointSlice controller
then lists the Ready replicas as its ready endpoints; in maintenance the replacement is Ready
before the old pod is evicted, so the Service never runs out of endpoints.

The operator keeps the parts it decides in step (selector, ports, type, its label and owner
reference) and leaves the rest (clusterIP, annotations, other labels) to the API server and users.
Pure, apart from ``apply``, which hands its one write to ``kube``.
"""

import logging
from collections.abc import Mapping
from typing import Any

from egpu_api import keys
from egpu_api.inference import ServiceSpec
from egpu_operator.kube import Kube
from egpu_operator.pods import owner_reference

log = logging.getLogger("egpu_operator.service")
#: The port fields the operator decides; the API server adds others (appProtocol, nodePort) it leaves alone.
PORT_FIELDS = ("name", "port", "targetPort", "protocol")


def manifest(deployment: Mapping[str, Any], spec: ServiceSpec) -> dict[str, Any]:
    """The Service as the operator wants it, with every default the API server would fill in written
    out (targetPort, protocol), so it compares equal to what the index then shows."""
    metadata = deployment["metadata"]
    ports = []
    for port in spec.ports:
        entry: dict[str, Any] = {"port": port.port, "targetPort": port.target_port or port.port, "protocol": port.protocol}
        if port.name:
            entry["name"] = port.name
        ports.append(entry)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "labels": {keys.DEPLOYMENT_LABEL: metadata["name"]},
            "ownerReferences": [owner_reference(metadata)],
        },
        "spec": {"type": "ClusterIP", "selector": {keys.DEPLOYMENT_LABEL: metadata["name"]}, "ports": ports},
    }


def view(service: Mapping[str, Any]) -> dict[str, Any]:
    """What the operator keeps of a Service in its index: the parts it decides, and its controller's uid."""
    spec = service.get("spec") or {}
    owners = (service.get("metadata") or {}).get("ownerReferences") or []
    return {
        "selector": dict(spec.get("selector") or {}),
        "ports": [_port(port) for port in spec.get("ports") or []],
        "type": spec.get("type", "ClusterIP"),
        "controller": next((owner.get("uid") for owner in owners if owner.get("controller")), None),
    }


def in_step(wanted: Mapping[str, Any], current: Mapping[str, Any] | None) -> bool:
    """Whether the Service ``current`` (an index ``view``) already is what ``wanted`` (a ``manifest``) says."""
    return current is not None and view(wanted) == current


def apply(kube: Kube, deployment: Mapping[str, Any], spec: ServiceSpec | None, current: Mapping[str, Any] | None) -> str | None:
    """Create, correct or delete the deployment's Service; None when it is in step, else why it cannot be
    (a Service of that name that someone else owns). Only a Service this deployment controls is deleted."""
    metadata = deployment["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    if spec is None:
        if current is not None and current.get("controller") == metadata.get("uid"):
            kube.delete_service(namespace, name)
            log.info("service deleted", extra={"deployment": f"{namespace}/{name}"})
        return None
    wanted = manifest(deployment, spec)
    if in_step(wanted, current):
        return None
    refusal = kube.apply_service(wanted, exists=current is not None)
    if refusal is None:
        log.info("service applied", extra={"deployment": f"{namespace}/{name}"})
    return refusal


def _port(port: Mapping[str, Any]) -> dict[str, Any]:
    return {key: port[key] for key in PORT_FIELDS if port.get(key) is not None}
