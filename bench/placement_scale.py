"""Benchmark: placing 100 InferenceDeployments on 1,000 fake GPU nodes, against kube-scheduler alone.

    python bench/placement_scale.py [--nodes 1000] [--deployments 100] [--replicas 2]

One local cluster, one run. 1,000 KWOK nodes carry the labels and per-GPU annotation the
real node agent computes for the eight default-fleet profiles (125 of each), and a fresh
agent Lease each. Baseline: the same replica pods as plain Deployments whose required
nodeAffinity says what the operator checks (bandwidth, VRAM, mode, health), so kube-scheduler
alone places them. Then the same models as InferenceDeployments, placed by the operator.
Printed: time from apply to every replica bound for both (target: operator <= 1.5 x
baseline), the operator's peak RSS (target < 300 MiB), and API requests per reconcile.

The 1,000 agents themselves are not run (1,000 threads on 2 cores would measure the
simulator); their Leases are created once and the operator's lease TTL is stretched to an hour.
"""

import argparse
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from egpu_api import keys
from egpu_api.fleet import load_fleet
from egpu_api.gpus import dump_gpus
from egpu_localcluster import LocalCluster, ensure_tools
from egpu_localcluster.kubectl import Kubectl
from egpu_localcluster.nodes import node_manifest
from egpu_localcluster.operator_process import OperatorProcess, install_crds
from egpu_node_agent.fake_nvml import FakeGpuHost
from egpu_node_agent.labels import gpu_statuses, node_labels
from egpu_node_agent.nvml import NvmlBackend
from egpu_runtime import timestamps

TARGET_RATIO = 1.5
TARGET_RSS_MIB = 300
# (size, budget s, overhead, modes): a mix of edge-sized models.
MODELS = [
    ("6G", 20, "1Gi", ["bare-metal", "passthrough", "vgpu"]),
    ("18G", 30, "2Gi", ["bare-metal", "passthrough"]),
    ("3G", 10, "1Gi", ["bare-metal", "passthrough", "vgpu", "mig"]),
    ("12G", 60, "2Gi", ["bare-metal", "passthrough", "mig"]),
]


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def labelled_nodes(count: int) -> list[dict[str, Any]]:
    """``count`` nodes cycling through the default fleet, labelled by the real labeler."""
    fleet = load_fleet()
    per_profile = []
    for entry in fleet.nodes:
        with tempfile.TemporaryDirectory() as sysfs:
            host = FakeGpuHost(entry, Path(sysfs))
            gpus = gpu_statuses(NvmlBackend(host.nvml, host.sysfs_root).read())
        per_profile.append((entry, node_labels(gpus), dump_gpus(gpus)))
    nodes = []
    for index in range(count):
        entry, labels, gpus = per_profile[index % len(per_profile)]
        manifest = node_manifest(entry)
        name = f"{entry.name}-{index:04d}"
        manifest["metadata"]["name"] = name
        manifest["metadata"]["labels"] |= labels | {"kubernetes.io/hostname": name, keys.FLEET_NODE_LABEL: name}
        manifest["metadata"]["annotations"][keys.GPUS_ANNOTATION] = gpus
        nodes.append(manifest)
    return nodes


def leases(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    now = timestamps.now(micro=True)
    items = [
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": f"{keys.AGENT_LEASE_PREFIX}{node['metadata']['name']}", "namespace": "egpu-system"},
            "spec": {"holderIdentity": node["metadata"]["name"], "leaseDurationSeconds": 40, "renewTime": now},
        }
        for node in nodes
    ]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def container() -> dict[str, Any]:
    return {"name": "server", "image": "registry.example/llm:1", "resources": {"limits": {keys.GPU_RESOURCE: "1"}}}


def baseline_deployment(index: int, replicas: int) -> dict[str, Any]:
    size, budget, overhead, modes = MODELS[index % len(MODELS)]
    need_mbps = math.ceil(_bytes(size) / 1e6 / budget)
    need_mib = math.ceil((_bytes(size) + _bytes(overhead)) / 2**20)
    expressions = [
        {"key": keys.PCIE_BANDWIDTH_MBPS_LABEL, "operator": "Gt", "values": [str(need_mbps - 1)]},
        {"key": keys.GPU_VRAM_MIB_LABEL, "operator": "Gt", "values": [str(need_mib - 1)]},
        {"key": keys.GPU_MODE_LABEL, "operator": "In", "values": modes},
        {"key": keys.HEALTH_LABEL, "operator": "In", "values": ["ok"]},
    ]
    labels = {"app": f"model-{index}"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"model-{index}", "namespace": "baseline"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": expressions}]}}},
                    "containers": [container()],
                },
            },
        },
    }  # fmt: skip


def inference_deployment(index: int, replicas: int) -> dict[str, Any]:
    size, budget, overhead, modes = MODELS[index % len(MODELS)]
    return {
        "apiVersion": "egpu-operator.io/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"name": f"model-{index}", "namespace": "operator"},
        "spec": {
            "replicas": replicas,
            "model": {"name": f"model-{index}", "size": size, "vramOverhead": overhead},
            "placement": {"maxLoadSeconds": budget, "allowedModes": modes},
            "template": {"spec": {"containers": [container()]}},
        },
    }


def _bytes(quantity: str) -> int:
    from egpu_api.quantity import parse_bytes

    return parse_bytes(quantity)


def apply_list(kubectl: Kubectl, items: list[dict[str, Any]]) -> None:
    for start in range(0, len(items), 250):
        kubectl.run(
            "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items[start : start + 250]})
        )


def time_to_bound(kubectl: Kubectl, namespace: str, expected: int, started: float, timeout_s: float = 600) -> float:
    """Seconds from ``started`` until ``expected`` pods of ``namespace`` have a node (polling lightly: it shares the cores)."""
    while True:
        listed = kubectl.run("get", "pods", "-n", namespace, "--field-selector=spec.nodeName!=", "-o", "name").stdout
        bound = len(listed.split())
        if (bound >= expected) if expected else bound == 0:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"{namespace}: {bound}/{expected} pods bound after {timeout_s:.0f} s")
        time.sleep(0.5)


def totals_of(text: str) -> dict[str, float]:
    print("\n".join(line for line in text.splitlines() if line.startswith("egpu_operator_triggers_total")))
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("egpu_operator_") and not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0]
            totals[name] = totals.get(name, 0) + float(line.rsplit(" ", 1)[1])
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args()
    expected = args.deployments * args.replicas

    with LocalCluster(ensure_tools()) as cluster:
        kubectl = cluster.kubectl
        say(f"creating {args.nodes} labelled fake GPU nodes")
        nodes = labelled_nodes(args.nodes)
        apply_list(kubectl, nodes)
        kubectl.wait_nodes_ready((node["metadata"]["name"] for node in nodes), timeout_s=300)
        for namespace in ("egpu-system", "baseline", "operator"):
            kubectl.run("create", "namespace", namespace)
        kubectl.apply(leases(nodes))
        install_crds(kubectl)
        for namespace in ("baseline", "operator"):
            kubectl.wait_default_service_account(namespace)

        say(f"baseline: {args.deployments} Deployments x {args.replicas} replicas, kube-scheduler alone")
        started = time.monotonic()
        apply_list(kubectl, [baseline_deployment(i, args.replicas) for i in range(args.deployments)])
        baseline_s = time_to_bound(kubectl, "baseline", expected, started)
        kubectl.run("delete", "deployments", "--all", "-n", "baseline", "--wait=true")
        time_to_bound(kubectl, "baseline", 0, time.monotonic())

        log = cluster.workdir / "operator.log"
        say("starting the operator")
        profile = os.environ.get("EGPU_BENCH_PROFILE")  # py-spy flame graph of the operator, for finding hot spots
        wrapper = ["py-spy", "record", "--format", "raw", "-o", profile, "--"] if profile else []
        operator = OperatorProcess(cluster.kubeconfig, log, env={"EGPU_OPERATOR_LEASE_TTL_SECONDS": "3600"}, wrapper=wrapper)
        try:
            operator.start(ready_timeout_s=300)  # ready once its indexes hold the initial listing
            say(f"operator: {args.deployments} InferenceDeployments x {args.replicas} replicas")
            started = time.monotonic()
            apply_list(kubectl, [inference_deployment(i, args.replicas) for i in range(args.deployments)])
            operator_s = time_to_bound(kubectl, "operator", expected, started)
            time.sleep(3)
            refused = kubectl.get_json("events", "-n", "operator", "--field-selector", "reason=FailedScheduling")["items"]
            kept = Path(tempfile.gettempdir()) / "egpu-bench-refusals.txt"
            kept.write_text("\n".join(event["message"] for event in refused))  # why kube-scheduler refused replicas
            totals = totals_of(operator.metrics())
            assert operator.process is not None
            status = Path(f"/proc/{operator.process.pid}/status").read_text()
            peak_rss_mib = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024
            fields = Path(f"/proc/{operator.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        finally:
            operator.stop(sig=signal.SIGINT, timeout_s=60)  # py-spy, when profiling, writes its report on SIGINT
            shutil.copy(log, Path(tempfile.gettempdir()) / "egpu-bench-operator.log")  # kept for reading

    reconciles = totals.get("egpu_operator_reconciles_total", 0)
    requests = totals.get("egpu_operator_api_requests_total", 0)
    ratio = operator_s / baseline_s
    verdict = "within target" if ratio <= TARGET_RATIO else "ABOVE TARGET"
    decisions = totals.get("egpu_operator_placement_seconds_count", 0)
    decision_ms = totals.get("egpu_operator_placement_seconds_sum", 0) / max(decisions, 1) * 1000
    print(f"nodes={args.nodes} deployments={args.deployments} replicas/deployment={args.replicas} pods={expected}")
    print(f"kube-scheduler alone (Deployments + nodeAffinity)  apply -> all bound  {baseline_s:6.1f} s")
    print(f"egpu-operator (InferenceDeployments)               apply -> all bound  {operator_s:6.1f} s")
    print(f"ratio operator/baseline  {ratio:.2f}  target <= {TARGET_RATIO}  {verdict}")
    print(
        f"operator peak RSS        {peak_rss_mib:.0f} MiB  target < {TARGET_RSS_MIB} MiB  "
        f"ratio {peak_rss_mib / TARGET_RSS_MIB:.2f}"
    )
    print(f"reconciles {reconciles:.0f}, API requests {requests:.0f}, per reconcile {requests / max(reconciles, 1):.2f}")
    print(f"operator CPU time {cpu_s:.1f} s (user + system, start to end)")
    print(f"queue triggers {totals.get('egpu_operator_triggers_total', 0):.0f}")
    print(f"placement decision  {decision_ms:.1f} ms mean over {decisions:.0f} decisions ({args.nodes} nodes each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
