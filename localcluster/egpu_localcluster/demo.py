"""``make demo``: the local control plane, the simulated edge fleet, and what the node agents publish."""

import json
import sys
import time
from typing import Any

from egpu_api import keys
from egpu_api.fleet import FleetProfile
from egpu_localcluster.cluster import LocalCluster, progress
from egpu_localcluster.kubectl import Kubectl, KubectlError
from egpu_localcluster.table import render

AGENT_NAMESPACE = "egpu-system"
P = keys.PREFIX

# An 18 GB model with a 30 s load budget needs >= 600 MB/s and 18 GiB + 2 GiB runtime overhead.
MODEL_BYTES, BUDGET_S, OVERHEAD_MIB = 18_000_000_000, 30, 2048
NEED_MBPS = MODEL_BYTES // 1_000_000 // BUDGET_S
NEED_MIB = MODEL_BYTES // 1024**2 + OVERHEAD_MIB
DEMO_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "llm-18gb", "namespace": "default"},
    "spec": {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": keys.PCIE_BANDWIDTH_MBPS_LABEL, "operator": "Gt", "values": [str(NEED_MBPS - 1)]},
                                {"key": keys.GPU_VRAM_MIB_LABEL, "operator": "Gt", "values": [str(NEED_MIB - 1)]},
                                {"key": keys.HEALTH_LABEL, "operator": "In", "values": ["ok"]},
                            ]
                        }
                    ]
                }
            }
        },
        "containers": [{"name": "serve", "image": "registry.example/llm:1", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
    },
}


def run_demo(fleet: FleetProfile, cluster: LocalCluster, keep: bool) -> None:
    """Show the fleet on ``cluster``; stop it afterwards unless ``keep``."""
    cluster.start()
    try:
        show(cluster, fleet)
    finally:
        if keep:
            print(f"\nThe cluster and the fleet's node agents keep running:\n  export KUBECONFIG={cluster.kubeconfig}")
            print(f"  {cluster.tools.kubectl} get nodes -L {P}pcie-bandwidth-mbps")
            print(f"Stop them with:\n  .venv/bin/egpu-localcluster down --name {cluster.name}")
        else:
            cluster.stop()


def show(cluster: LocalCluster, fleet: FleetProfile) -> None:
    kubectl = cluster.kubectl
    progress(f"creating {len(fleet.nodes)} fake GPU nodes from fleet profile {fleet.metadata.name!r}")
    kubectl.apply_fleet(fleet)
    kubectl.wait_nodes_ready(node.name for node in fleet.nodes)
    kubectl.run("create", "namespace", AGENT_NAMESPACE)

    progress("starting one node agent per node on simulated NVML and sysfs (egpu-node-agent simulate)")
    cluster.spawn(
        [sys.executable, "-m", "egpu_node_agent", "simulate", "--kubeconfig", str(cluster.kubeconfig),
         "--poll-interval", "2", "--namespace", AGENT_NAMESPACE],
        "fleet-simulator",
    )  # fmt: skip
    nodes = wait_for_labels(kubectl, [node.name for node in fleet.nodes])

    print(f"\n== The edge fleet as its node agents published it (labels {P}*; worst GPU per node) ==")
    print(label_table(nodes))
    switch = next((n for n in nodes if n["metadata"]["name"] == "switch-4x-a5000"), None)
    if switch is not None:
        gpus = json.loads(switch["metadata"]["annotations"][keys.GPUS_ANNOTATION])
        hops = " -> ".join(f"{hop['device']} {hop['current']}" for hop in gpus[0]["path"])
        print(f"\nswitch-4x-a5000, GPU 0's path to the root port: {hops}: the x1 uplink is what a load sees.")

    progress(f"applying a pod for an 18 GB model with a {BUDGET_S} s load budget, selected by nodeAffinity on the labels")
    kubectl.apply(DEMO_POD)
    deadline = time.monotonic() + 60
    while (pod := kubectl.get_json("pod", "llm-18gb", "-n", "default"))["status"].get("phase") != "Running":
        if time.monotonic() > deadline:
            raise KubectlError("the demo pod did not reach Running within 60 s; see 'kubectl describe pod llm-18gb'")
        time.sleep(0.5)
    adequate = sorted(
        n["metadata"]["name"]
        for n in nodes
        if int(n["metadata"]["labels"].get(keys.PCIE_BANDWIDTH_MBPS_LABEL, "0")) >= NEED_MBPS
        and int(n["metadata"]["labels"].get(keys.GPU_VRAM_MIB_LABEL, "0")) >= NEED_MIB
    )
    chosen = pod["spec"]["nodeName"]
    bandwidth = int(
        next(n for n in nodes if n["metadata"]["name"] == chosen)["metadata"]["labels"][keys.PCIE_BANDWIDTH_MBPS_LABEL]
    )
    print(f"\n== Pod llm-18gb: needs >= {NEED_MBPS} MB/s and >= {NEED_MIB} MiB ==")
    print(kubectl.run("get", "pod", "llm-18gb", "-n", "default", "-o", "wide").stdout.rstrip())
    print(f"Adequate by labels: {', '.join(adequate)}.")
    print(
        f"kube-scheduler chose {chosen}: the model crosses its link in about {MODEL_BYTES / 1e6 / bandwidth:.1f} s. "
        "Labels keep it off nodes that cannot load it in time; kube-scheduler does not rank the rest by load time."
    )


def wait_for_labels(kubectl: Kubectl, names: list[str], timeout_s: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = [n for n in kubectl.get_json("nodes")["items"] if n["metadata"]["name"] in names]
        if all(keys.HEALTH_LABEL in n["metadata"].get("labels", {}) for n in nodes) and len(nodes) == len(names):
            return nodes
        if time.monotonic() > deadline:
            raise KubectlError(f"the node agents did not label every node within {timeout_s:.0f} s; see fleet-simulator.log")
        time.sleep(0.5)


def label_table(nodes: list[dict[str, Any]]) -> str:
    headers = ("NODE", "GPUS", "PRODUCT", "VRAM MiB", "LINK", "MB/s", "POWER W", "MODE", "HEALTH")
    rows = []
    for node in nodes:
        labels = node["metadata"]["labels"]

        def get(key: str, labels: dict[str, str] = labels) -> str:
            return str(labels.get(P + key, "-"))

        rows.append(
            [
                node["metadata"]["name"],
                get("gpu-count"),
                get("gpu-product"),
                get("gpu-vram-mib"),
                f"Gen{get('pcie-gen')} x{get('pcie-width')}",
                get("pcie-bandwidth-mbps"),
                f"{get('power-limit-watts')} ({get('power-min-watts')}-{get('power-max-watts')})"
                if P + "power-limit-watts" in labels
                else "n/a",
                get("gpu-mode") + (f" {get('mig-profiles')}" if P + "mig-profiles" in labels else ""),
                get("health"),
            ]
        )
    return render(headers, sorted(rows, key=lambda row: int(str(row[5])) if str(row[5]).isdigit() else 0))
