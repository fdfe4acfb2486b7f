"""spec.service: a Service whose ready endpoints are the Ready replicas, never none during a GPUMaintenance.

The local cluster has no kube-proxy, so no request can cross the Service; what a client would
reach is what the EndpointSlice controller (in kube-controller-manager) publishes, so a poller
samples the ready endpoints of the Service's EndpointSlices through the whole maintenance.
"""

import json
import threading
from typing import Any

import pytest
from kubernetes import client

from egpu_localcluster.kubectl import Kubectl
from egpu_runtime.kube import api_client
from tests.e2e import maintenances as gm
from tests.e2e.deployments import apply, deployment, ready_on
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e
SERVICE = {"ports": [{"name": "http", "port": 80, "targetPort": 8000}]}
SAMPLE_EVERY_S = 0.2


class EndpointPoller:
    """Samples the number of ready endpoints of a Service every ``SAMPLE_EVERY_S`` in a thread."""

    def __init__(self, kube: Kubectl, namespace: str, service: str) -> None:
        self._api = client.DiscoveryV1Api(api_client(kube.kubeconfig))
        self._namespace, self._service = namespace, service
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def ready_endpoints(self) -> int:
        slices = self._api.list_namespaced_endpoint_slice(
            self._namespace, label_selector=f"kubernetes.io/service-name={self._service}"
        ).items
        return sum(1 for s in slices for e in s.endpoints or [] if e.conditions and e.conditions.ready)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.ready_endpoints())
            self._stop.wait(SAMPLE_EVERY_S)

    def __enter__(self) -> "EndpointPoller":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def service(kube: Kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    found = kube.run("get", "service", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(found.stdout) if found.returncode == 0 else None


def test_the_service_never_runs_out_of_ready_endpoints_during_maintenance(
    kube: Kubectl, workspace: str, maintenances: None
) -> None:
    apply(kube, workspace, deployment("served", "6G", 20, disruption={"minAvailable": 1}, service=SERVICE))
    [source] = wait_for(lambda: ready_on(kube, workspace, "served", 1), 60, "served: 1 replica Ready")
    made = wait_for(lambda: service(kube, workspace, "served"), 30, "the Service of served")
    assert made["spec"]["selector"] == {"egpu-operator.io/inference-deployment": "served"}
    assert made["spec"]["ports"][0]["targetPort"] == 8000
    assert made["metadata"]["ownerReferences"][0]["kind"] == "InferenceDeployment"

    with EndpointPoller(kube, workspace, "served") as poller:
        wait_for(lambda: True if poller.ready_endpoints() == 1 else None, 30, "the EndpointSlice to list the Ready replica")
        gm.create(kube, "reseat-for-service", source, reason="reseat the OCuLink cable")
        gm.wait_phase(kube, "reseat-for-service", "Ready")
        [target] = wait_for(lambda: ready_on(kube, workspace, "served", 1), 30, "served: 1 replica Ready elsewhere")
        wait_for(lambda: True if poller.ready_endpoints() == 1 else None, 30, "the EndpointSlice to settle on the new replica")
        gm.complete(kube, "reseat-for-service")

    print(f"{len(poller.samples)} samples of ready endpoints: {poller.samples}")
    assert target != source
    assert len(poller.samples) >= 5, "the poller sampled the maintenance"
    assert min(poller.samples) >= 1, f"the Service had no ready endpoint during maintenance: {poller.samples}"


def test_an_edited_selector_is_put_back_and_removing_spec_service_deletes_it(kube: Kubectl, workspace: str) -> None:
    apply(kube, workspace, deployment("routed", "6G", 20, service=SERVICE))
    made = wait_for(lambda: service(kube, workspace, "routed"), 60, "the Service of routed")
    cluster_ip = made["spec"]["clusterIP"]

    kube.run("patch", "service", "routed", "-n", workspace, "--type=merge", "-p", '{"spec": {"selector": {"app": "other"}}}')
    put_back = wait_for(
        lambda: (
            found
            if (found := service(kube, workspace, "routed"))
            and found["spec"]["selector"] == {"egpu-operator.io/inference-deployment": "routed"}
            else None
        ),
        30,
        "the operator to put the selector back",
    )
    assert put_back["spec"]["clusterIP"] == cluster_ip

    kube.run("delete", "service", "routed", "-n", workspace)
    wait_for(lambda: service(kube, workspace, "routed"), 30, "the operator to create the deleted Service again")

    kube.run("patch", "idep", "routed", "-n", workspace, "--type=json", "-p", '[{"op": "remove", "path": "/spec/service"}]')
    wait_for(lambda: True if service(kube, workspace, "routed") is None else None, 30, "the Service to be deleted")
