"""Benchmark: placing 100 InferenceDeployments on thousands of fake GPU nodes, against kube-scheduler alone.

    python bench/placement_scale.py [--nodes 1000] [--background-pods 0] [--deployments 100] [--replicas 2]
    python bench/placement_scale.py --nodes 5000 --background-pods 50000    # issue 21's size

One local cluster, one run. KWOK nodes carry the labels and per-GPU annotation the real node
agent computes for the eight default-fleet profiles (one in eight of each), and a fresh agent
Lease each. ``--background-pods`` ordinary pods (CPU and memory requests, bound and Running,
dealt round-robin: ten a node at 5,000 and 50,000) fill the cluster as a real one is filled.
Baseline: the same replica pods as plain Deployments whose required nodeAffinity says what the
operator checks (bandwidth, VRAM, mode, health), so kube-scheduler alone places them. Then the
same models as InferenceDeployments, placed by the operator. Printed: time from apply to every
replica bound for both (target: operator <= 1.0 x baseline), the operator's start-up (process
start to /readyz), its peak RSS (target < 500 MiB), and API requests per reconcile. The
1,000-node ratio comes from a second run with ``--nodes 1000``.

The agents themselves are not run (thousands of threads on 2 cores would measure the
simulator); their Leases are created once and the operator's lease TTL is stretched to an hour.
KWOK renews the kubelet Leases every 5 min instead of 50 s (``LocalCluster(quiet_nodes=True)``;
``--kwok-defaults`` turns that off): at 5,000 nodes its defaults cost 100 writes a second.
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

import background

from egpu_api import keys
from egpu_api.fleet import load_fleet
from egpu_api.gpus import dump_gpus
from egpu_localcluster import LocalCluster, ensure_tools
from egpu_localcluster.kubectl import LIFECYCLE_TAINTS, Kubectl
from egpu_localcluster.nodes import node_manifest
from egpu_localcluster.operator_process import OperatorProcess, install_crds
from egpu_node_agent.fake_nvml import FakeGpuHost
from egpu_node_agent.labels import gpu_statuses, node_labels
from egpu_node_agent.nvml import NvmlBackend
from egpu_runtime import timestamps

TARGET_RATIO = 1.0
TARGET_RSS_MIB = 500
# (size, budget s, overhead, modes): a mix of edge-sized models.
MODELS = [
    ("6G", 20, "1Gi", ["bare-metal", "passthrough", "vgpu"]),
    ("18G", 30, "2Gi", ["bare-metal", "passthrough"]),
    ("3G", 10, "1Gi", ["bare-metal", "passthrough", "vgpu", "mig"]),
    ("12G", 60, "2Gi", ["bare-metal", "passthrough", "mig"]),
]


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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


def create(kubectl: Kubectl, items: list[dict[str, Any]]) -> None:
    """Create new objects fast: ``kubectl apply`` reads each one back first, and only one at a time."""
    background.create_concurrently(lambda text: kubectl.run("create", "-f", "-", stdin=text, check=False), items)


def wait_nodes_ready(kubectl: Kubectl, nodes: list[dict[str, Any]], timeout_s: float) -> float:
    """Seconds until every node is Ready and rid of the node lifecycle controller's taints, polling
    the server's table and a two-field listing (a full JSON listing of thousands of annotated nodes,
    twice a second, would cost the cores the nodes need)."""
    started = time.monotonic()
    while True:
        table = kubectl.run("get", "nodes", "--no-headers").stdout.splitlines()
        ready = sum(1 for line in table if line.split()[1] == "Ready")
        tainted = lifecycle_tainted(kubectl) if ready >= len(nodes) else len(nodes)
        if tainted == 0:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"{ready}/{len(nodes)} nodes Ready, {tainted} with a lifecycle taint after {timeout_s:.0f} s")
        say(f"{ready}/{len(nodes)} nodes Ready, {tainted} not yet usable")
        time.sleep(5)


def lifecycle_tainted(kubectl: Kubectl) -> int:
    """Nodes that still carry a taint of the node lifecycle controller (kube-scheduler passes them over)."""
    lines = kubectl.run("get", "nodes", "--no-headers", "-o", "custom-columns=T:.spec.taints[*].key").stdout.splitlines()
    return sum(1 for line in lines if LIFECYCLE_TAINTS & set(line.strip().split(",")))


def wait_running(kubectl: Kubectl, namespace: str, expected: int, timeout_s: float) -> float:
    """Seconds until no pod of ``namespace`` is short of Running (the server filters: the list shrinks)."""
    started = time.monotonic()
    while True:
        pending = kubectl.run("get", "pods", "-n", namespace, "--field-selector=status.phase!=Running", "-o", "name").stdout
        left = len(pending.split())
        if left == 0:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"{namespace}: {left}/{expected} pods not Running after {timeout_s:.0f} s")
        say(f"{namespace}: {expected - left}/{expected} pods Running")
        time.sleep(5)


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


def prepare(kubectl: Kubectl, args: argparse.Namespace) -> None:
    """Nodes, agent Leases, CRDs and namespaces; then the background pods, Running."""
    say(f"creating {args.nodes} labelled fake GPU nodes")
    nodes = labelled_nodes(args.nodes)
    create(kubectl, nodes)
    ready_s = wait_nodes_ready(kubectl, nodes, timeout_s=max(300, args.nodes * 0.3))
    say(f"{args.nodes} nodes Ready in {ready_s:.0f} s")
    namespaces = ("egpu-system", "baseline", "operator", background.NAMESPACE)
    for namespace in namespaces:
        kubectl.run("create", "namespace", namespace)
    create(kubectl, leases(nodes)["items"])
    install_crds(kubectl)
    for namespace in namespaces[1:]:
        kubectl.wait_default_service_account(namespace)
    if args.background_pods:
        say(f"creating {args.background_pods} background pods, bound to their nodes")
        started = time.monotonic()
        create(kubectl, background.background_pods(nodes, args.background_pods))
        created_s = time.monotonic() - started
        running_s = wait_running(kubectl, background.NAMESPACE, args.background_pods, timeout_s=1800)
        say(f"background pods created in {created_s:.0f} s, all Running {running_s:.0f} s later")


def measure_baseline(kubectl: Kubectl, args: argparse.Namespace) -> float:
    """Apply to all bound for plain Deployments placed by kube-scheduler; they are deleted again."""
    expected = args.deployments * args.replicas
    say(f"baseline: {args.deployments} Deployments x {args.replicas} replicas, kube-scheduler alone")
    started = time.monotonic()
    apply_list(kubectl, [baseline_deployment(i, args.replicas) for i in range(args.deployments)])
    baseline_s = time_to_bound(kubectl, "baseline", expected, started)
    kubectl.run("delete", "deployments", "--all", "-n", "baseline", "--wait=true")
    time_to_bound(kubectl, "baseline", 0, time.monotonic())
    return baseline_s


def measure_operator(cluster: LocalCluster, args: argparse.Namespace) -> dict[str, float]:
    """Start the operator, then apply to all bound for the InferenceDeployments; its figures."""
    kubectl = cluster.kubectl
    log = cluster.workdir / "operator.log"
    say("starting the operator")
    profile = os.environ.get("EGPU_BENCH_PROFILE")  # py-spy flame graph of the operator, for finding hot spots
    wrapper = ["py-spy", "record", "--format", "raw", "-o", profile, "--"] if profile else []
    operator = OperatorProcess(cluster.kubeconfig, log, env={"EGPU_OPERATOR_LEASE_TTL_SECONDS": "3600"}, wrapper=wrapper)
    try:
        started = time.monotonic()
        operator.start(ready_timeout_s=600)  # ready once its indexes hold the initial listing
        figures = {"startup_s": time.monotonic() - started}
        say(f"operator: {args.deployments} InferenceDeployments x {args.replicas} replicas")
        started = time.monotonic()
        apply_list(kubectl, [inference_deployment(i, args.replicas) for i in range(args.deployments)])
        figures["operator_s"] = time_to_bound(kubectl, "operator", args.deployments * args.replicas, started)
        time.sleep(3)
        refused = kubectl.get_json("events", "-n", "operator", "--field-selector", "reason=FailedScheduling")["items"]
        kept = Path(tempfile.gettempdir()) / "egpu-bench-refusals.txt"
        kept.write_text("\n".join(event["message"] for event in refused))  # why kube-scheduler refused replicas
        figures |= totals_of(operator.metrics())
        assert operator.process is not None
        figures |= process_figures(operator.process.pid)
    finally:
        operator.stop(sig=signal.SIGINT, timeout_s=60)  # py-spy, when profiling, writes its report on SIGINT
        shutil.copy(log, Path(tempfile.gettempdir()) / "egpu-bench-operator.log")  # kept for reading
    return figures


def process_figures(pid: int) -> dict[str, float]:
    """Peak RSS (MiB) and CPU time (s) of a running process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    peak_rss_mib = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {"peak_rss_mib": peak_rss_mib, "cpu_s": (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")}


def report(args: argparse.Namespace, baseline_s: float, figures: dict[str, float]) -> None:
    operator_s, peak_rss_mib = figures["operator_s"], figures["peak_rss_mib"]
    reconciles = figures.get("egpu_operator_reconciles_total", 0)
    requests = figures.get("egpu_operator_api_requests_total", 0)
    ratio = operator_s / baseline_s
    verdict = "within target" if ratio <= TARGET_RATIO else "ABOVE TARGET"
    decisions = figures.get("egpu_operator_placement_seconds_count", 0)
    decision_ms = figures.get("egpu_operator_placement_seconds_sum", 0) / max(decisions, 1) * 1000
    expected = args.deployments * args.replicas
    kwok = "KWOK defaults (Leases renewed every 50 s)" if args.kwok_defaults else "quiet KWOK (Leases renewed every 300 s)"
    print(f"nodes={args.nodes} background pods={args.background_pods} deployments={args.deployments} "
          f"replicas/deployment={args.replicas} pods={expected}; {kwok}")  # fmt: skip
    print(f"kube-scheduler alone (Deployments + nodeAffinity)  apply -> all bound  {baseline_s:6.1f} s")
    print(f"egpu-operator (InferenceDeployments)               apply -> all bound  {operator_s:6.1f} s")
    print(f"ratio operator/baseline  {ratio:.2f}  target <= {TARGET_RATIO}  {verdict}")
    print(
        f"operator peak RSS        {peak_rss_mib:.0f} MiB  target < {TARGET_RSS_MIB} MiB  "
        f"ratio {peak_rss_mib / TARGET_RSS_MIB:.2f}"
    )
    print(f"operator start-up        {figures['startup_s']:.1f} s  (process start to /readyz)")
    print(f"reconciles {reconciles:.0f}, API requests {requests:.0f}, per reconcile {requests / max(reconciles, 1):.2f}")
    print(f"operator CPU time {figures['cpu_s']:.1f} s (user + system, start to end)")
    print(f"queue triggers {figures.get('egpu_operator_triggers_total', 0):.0f}")
    print(f"placement decision  {decision_ms:.1f} ms mean over {decisions:.0f} decisions ({args.nodes} nodes each)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--background-pods", type=int, default=0, help="ordinary pods, bound and Running")
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--kwok-defaults", action="store_true", help="KWOK's own heartbeat timings")
    args = parser.parse_args()
    try:
        background.pods_per_node(args.background_pods, args.nodes)
    except background.BackgroundError as error:
        parser.error(str(error))

    with LocalCluster(ensure_tools(), quiet_nodes=not args.kwok_defaults) as cluster:
        prepare(cluster.kubectl, args)
        baseline_s = measure_baseline(cluster.kubectl, args)
        figures = measure_operator(cluster, args)
    report(args, baseline_s, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
