"""``make demo``: the local control plane, the simulated edge fleet, its node agents, and the operator placing models."""

import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from egpu_api import keys
from egpu_api.fleet import FleetProfile
from egpu_localcluster import adoption
from egpu_localcluster.cluster import LocalCluster, progress
from egpu_localcluster.demo_maintenance import show_maintenance
from egpu_localcluster.kubectl import Kubectl, KubectlError
from egpu_localcluster.operator_process import free_port, install_crds, operator_command, wait_ready
from egpu_localcluster.table import render
from egpu_operator.explain import explain

AGENT_NAMESPACE = "egpu-system"
P = keys.PREFIX

REPO = Path(__file__).resolve().parents[2]


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


@dataclass(frozen=True)
class Product:
    """What ``start_product`` left running: the fleet's nodes as their agents labelled them, and where
    the agents' and the operator's /metrics answer."""

    nodes: list[dict[str, Any]]
    agent_metrics_url: str
    operator_metrics_url: str


def start_product(cluster: LocalCluster, fleet: FleetProfile) -> Product:
    """A working cluster without the story: the fleet's fake GPU nodes, one simulated node agent per
    node, the CRDs (marked for adoption by ``helm install``) and the operator, each with /metrics on
    a free local port. ``egpu-localcluster up`` stops here; the demo goes on to its examples."""
    kubectl = cluster.kubectl
    progress(f"creating {len(fleet.nodes)} fake GPU nodes from fleet profile {fleet.metadata.name!r}")
    kubectl.apply_fleet(fleet)
    kubectl.wait_nodes_ready(node.name for node in fleet.nodes)
    kubectl.run("create", "namespace", AGENT_NAMESPACE)

    progress("starting one node agent per node on simulated NVML and sysfs (egpu-node-agent simulate)")
    agent_port, operator_port = free_port(), free_port()
    cluster.spawn(
        [sys.executable, "-m", "egpu_node_agent", "simulate", "--kubeconfig", str(cluster.kubeconfig),
         "--poll-interval", "2", "--namespace", AGENT_NAMESPACE, "--metrics-port", str(agent_port)],
        "fleet-simulator",
    )  # fmt: skip
    nodes = wait_for_labels(kubectl, [node.name for node in fleet.nodes])

    progress("installing the CRDs and starting the operator (egpu-operator run)")
    install_crds(kubectl)
    adoption.mark_crds_for_helm(kubectl)  # so `helm install egpu-operator -n egpu-system` takes them over
    pid = cluster.spawn(operator_command(cluster.kubeconfig, operator_port), "operator")
    wait_ready(operator_port, lambda: not cluster.running(pid), cluster.workdir / "operator.log")
    return Product(nodes, f"http://127.0.0.1:{agent_port}/metrics", f"http://127.0.0.1:{operator_port}/metrics")


def show(cluster: LocalCluster, fleet: FleetProfile) -> None:
    kubectl = cluster.kubectl
    product = start_product(cluster, fleet)
    nodes = product.nodes

    print(f"\n== The edge fleet as its node agents published it (labels {P}*; worst GPU per node) ==")
    print(label_table(nodes))
    switch = next((n for n in nodes if n["metadata"]["name"] == "switch-4x-a5000"), None)
    if switch is not None:
        gpus = json.loads(switch["metadata"]["annotations"][keys.GPUS_ANNOTATION])
        hops = " -> ".join(f"{hop['device']} {hop['current']}" for hop in gpus[0]["path"])
        print(f"\nswitch-4x-a5000, GPU 0's path to the root port: {hops}: the x1 uplink is what a load sees.")
    print(f"\nMetrics: node agents {product.agent_metrics_url}, operator {product.operator_metrics_url}")

    progress("applying examples/: an 18 GB model (30 s budget), a 6 GB model (20 s), a 140 GiB model (fits nowhere)")
    kubectl.run("apply", "-f", str(REPO / "examples"))
    deployments = wait_for_placement(kubectl, ["llm-18gb", "llm-6gb", "llm-140gb"])

    print("\n== kubectl get inferencedeployments ==")
    print(kubectl.run("get", "idep").stdout.rstrip())
    print("\n== Where each replica went ==")
    print(placement_table(deployments))
    nodes = kubectl.get_json("nodes")["items"]
    leases = kubectl.get_json("leases", "-n", AGENT_NAMESPACE)["items"]
    pods = kubectl.get_json("pods", "--all-namespaces")["items"]
    for item in deployments:
        print(f"\n== {item['metadata']['name']}: why not elsewhere ==")
        print(verdict_table(item, nodes, leases, pods))
    show_maintenance(kubectl)


def wait_for_placement(kubectl: Kubectl, names: list[str], timeout_s: float = 90) -> list[dict[str, Any]]:
    """The deployments once each is fully Ready or reported unplaceable."""
    deadline = time.monotonic() + timeout_s
    while True:
        items = [kubectl.get_json("idep", name) for name in names]
        done = []
        for item in items:
            status = item.get("status") or {}
            placed = next((c for c in status.get("conditions", []) if c["type"] == "Placed"), None)
            ready = status.get("readyReplicas") == item["spec"]["replicas"]
            # Power limits: wait until the node agents report what they applied (or why they could not).
            powered = all(
                (p.get("power") or {}).get("appliedWatts") is not None or (p.get("power") or {}).get("message")
                for p in status.get("placements") or []
                if item["spec"].get("power")
            )
            done.append(placed is not None and ((ready and powered) or placed["status"] == "False"))
        if all(done):
            return items
        if time.monotonic() > deadline:
            raise KubectlError(f"deployments not settled within {timeout_s:.0f} s; see operator.log in the cluster folder")
        time.sleep(0.5)


def placement_table(deployments: list[dict[str, Any]]) -> str:
    rows: list[list[object]] = []
    for item in deployments:
        name = item["metadata"]["name"]
        placements = (item.get("status") or {}).get("placements") or []
        for placement in placements:
            power = placement.get("power") or {}
            rows.append(
                [
                    name,
                    placement["replica"],
                    placement["node"],
                    f"Gen{placement.get('linkGeneration')} x{placement.get('linkWidth')}",
                    placement.get("bandwidthMBps", "-"),
                    f"{placement.get('estimatedLoadSeconds', '-')} s",
                    f"{power.get('requestedWatts', '-')} / {power.get('appliedWatts') or 'n/a (vGPU: NVML cannot set it)'}"
                    if power
                    else "-",
                    "yes" if placement.get("ready") else "no",
                ]
            )
        if not placements:
            rows.append([name, "-", "(none)", "-", "-", "-", "-", "no"])
    return render(("DEPLOYMENT", "REPLICA", "NODE", "LINK", "MB/s", "EST. LOAD", "POWER W REQ/APPLIED", "READY"), rows)


def verdict_table(
    item: dict[str, Any], nodes: list[dict[str, Any]], leases: list[dict[str, Any]], pods: list[dict[str, Any]]
) -> str:
    """Each node's verdict for one deployment, with the reason the operator's placement gives
    (``egpu_operator.explain``: ``ExplainError`` when its spec cannot be read)."""
    explanation = explain(item, nodes, leases, pods, datetime.now(UTC))
    rows = [
        [verdict.node, f"{verdict.vram_mib} MiB", f"{verdict.bandwidth_mbps} MB/s", verdict.sentence()]
        for verdict in explanation.nodes
    ]
    return explanation.requirement.sentence() + "\n" + render(("NODE", "VRAM", "LINK", "VERDICT"), rows)


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
