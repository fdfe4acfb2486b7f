"""``make demo``: start the local control plane with the simulated edge fleet and show it."""

import time
from typing import Any

from egpu_api.fleet import FleetProfile
from egpu_localcluster.cluster import LocalCluster, progress
from egpu_localcluster.fleet_view import cluster_table
from egpu_localcluster.kubectl import Kubectl, KubectlError

DEMO_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "llm-on-a-pi", "namespace": "default"},
    "spec": {
        "nodeSelector": {"kubernetes.io/arch": "arm64"},
        "containers": [{"name": "serve", "image": "registry.example/llm:1", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
    },
}


def run_demo(fleet: FleetProfile, cluster: LocalCluster, keep: bool) -> None:
    """Show the fleet on ``cluster``; stop it afterwards unless ``keep``."""
    cluster.start()
    try:
        show(cluster.kubectl, fleet)
    finally:
        if keep:
            print(f"\nThe cluster keeps running:\n  export KUBECONFIG={cluster.kubeconfig}")
            print(f"  {cluster.tools.kubectl} get nodes")
            print(f"Stop it with:\n  .venv/bin/egpu-localcluster down --name {cluster.name}")
        else:
            cluster.stop()


def show(kubectl: Kubectl, fleet: FleetProfile) -> None:
    progress(f"creating {len(fleet.nodes)} fake GPU nodes from fleet profile {fleet.metadata.name!r}")
    kubectl.apply_fleet(fleet)
    kubectl.wait_nodes_ready(node.name for node in fleet.nodes)

    print(f"\n== The simulated edge fleet ({fleet.metadata.name}), as the API server sees it ==")
    print(cluster_table(fleet, kubectl.get_json("nodes")["items"]))
    print("\n== kubectl get nodes ==")
    print(kubectl.run("get", "nodes", "-L", "kubernetes.io/arch", "-L", "egpu-operator.io/fleet-node").stdout.rstrip())

    progress("scheduling a pod that asks for one GPU on an arm64 host")
    kubectl.apply(DEMO_POD)
    deadline = time.monotonic() + 60
    while (pod := kubectl.get_json("pod", "llm-on-a-pi", "-n", "default"))["status"].get("phase") != "Running":
        if time.monotonic() > deadline:
            raise KubectlError("the demo pod did not reach Running within 60 s; see 'kubectl describe pod llm-on-a-pi'")
        time.sleep(0.5)
    print("\n== A pod asking for nvidia.com/gpu: 1 on arm64 ==")
    print(kubectl.run("get", "pod", "llm-on-a-pi", "-n", "default", "-o", "wide").stdout.rstrip())
    node = fleet.node(pod["spec"]["nodeName"])
    gpu = node.gpus[0]
    print(
        f"\nkube-scheduler put it on {node.name} ({gpu.product}), whose GPU sits behind a {gpu.bottleneck} link "
        f"({gpu.bottleneck.bandwidth_mbps} MB/s), so an 18 GB model needs at least "
        f"{18_000 / gpu.bottleneck.bandwidth_mbps:.0f} s just to cross the link."
    )
