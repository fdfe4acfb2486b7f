"""Benchmark: draining a node that holds 10 model replicas, GPUMaintenance against ``kubectl drain``.

    python bench/maintenance_drain.py [--replicas 10] [--load-scale 1.0]

One local cluster, one run, real node agents on simulated hardware. Three PCIe-switch hosts
(RTX A5000s behind a Gen3 x1 uplink, as in the default fleet): the source with 10 GPUs, two
targets with 5 each. Ten one-replica InferenceDeployments of a 6 GB model are placed on the
source (the targets are cordoned while they are placed), and their simulated pods take their
estimated load time (times --load-scale) to become Ready, as a real model server would. Loads
share each host's x1 uplink: one alone takes 7.5 s, two at once 14.5 s each, and a third would
miss the 20 s budget, so the operator starts at most two per target host at a time; five 6 GB
loads through one 856 MB/s uplink cannot finish in under 35 s.

Then the same setup is drained twice:
1. a GPUMaintenance: time from its creation to phase Ready (node empty, safe to service);
2. ``kubectl drain`` (the baseline): time until the command returns, and until all replicas
   are Ready again elsewhere.
For both, a pod watch records the fewest Ready replicas at any moment (target: all of them for
the GPUMaintenance). Printed: both times, both minima, their ratios, the GPUMaintenance's last
planned Ready time (status.plannedReadyAt) and the uplinks' floor (bytes over bandwidth).
"""

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from egpu_api.fleet import load_fleet, parse_fleet
from egpu_localcluster import LocalCluster, ensure_tools
from egpu_localcluster.kubectl import Kubectl
from egpu_localcluster.operator_process import OperatorProcess, install_crds
from egpu_localcluster.readywatch import DEPLOYMENT_LABEL, ReadyWatch
from egpu_node_agent.simulator import FleetSimulator
from egpu_runtime.kube import api_client

NAMESPACE = "bench"
SOURCE, TARGETS = "switch-10x-a5000", ("switch-5x-a5000-a", "switch-5x-a5000-b")


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def fleet(replicas: int) -> Any:
    """The source host with ``replicas`` GPUs and two targets sharing them, all behind x1 uplinks."""
    document: dict[str, Any] = load_fleet().model_dump(by_alias=True, exclude_none=True)
    switch = next(node for node in document["nodes"] if node["name"] == "switch-4x-a5000")
    gpu = {key: value for key, value in switch["gpus"][0].items() if key not in ("uuid", "pciBusId")}
    half = (replicas + 1) // 2

    def host(name: str, count: int) -> dict[str, Any]:
        gpus = [{**gpu, "pciBusId": f"0000:{index + 3:02x}:00.0"} for index in range(count)]
        return {**switch, "name": name, "gpus": gpus}

    return parse_fleet({**document, "nodes": [host(SOURCE, replicas), *(host(name, half) for name in TARGETS)]})


def inference_deployment(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "egpu-operator.io/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"name": f"model-{index:02d}", "namespace": NAMESPACE},
        "spec": {
            "replicas": 1,
            "model": {"name": f"model-{index:02d}", "size": "6G"},
            "placement": {"maxLoadSeconds": 20, "allowedModes": ["bare-metal"]},
            "template": {"spec": {"containers": [{"name": "server", "image": "registry.example/llm:1"}]}},
        },
    }


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def wait(what: str, probe: Any, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.1)


def ready_on(kubectl: Kubectl, node: str | None, count: int) -> bool:
    pods = kubectl.get_json("pods", "-n", NAMESPACE, "-l", DEPLOYMENT_LABEL)["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    ready = [p for p in live if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]
    return len(live) == count and len(ready) == count and (node is None or {p["spec"].get("nodeName") for p in ready} == {node})


def place_on_source(kubectl: Kubectl, operator: OperatorProcess, replicas: int) -> None:
    """Fresh deployments, all on the source: the targets are cordoned while they are placed."""
    kubectl.run("delete", "inferencedeployments", "--all", "-n", NAMESPACE, "--wait=true", "--timeout=120s")
    wait("old pods to go", lambda: not kubectl.get_json("pods", "-n", NAMESPACE)["items"])
    for target in TARGETS:
        kubectl.run("cordon", target)
    kubectl.run("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                "items": [inference_deployment(index) for index in range(replicas)]}))  # fmt: skip
    wait(f"{replicas} replicas Ready on {SOURCE}", lambda: ready_on(kubectl, SOURCE, replicas))
    swept = counters(operator)[0]
    kubectl.run("uncordon", *TARGETS)
    # The drain starts once the operator has seen the uncordon (its node watch queued the
    # deployments again) and has reconciled what that queued, instead of after a guessed sleep.
    wait_settled(operator, swept)


def counters(operator: OperatorProcess) -> tuple[float, float]:
    """(times deployments were queued because node facts changed, reconciles), from /metrics."""
    lines = operator.metrics().splitlines()

    def total(prefix: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))

    return total('egpu_operator_triggers_total{source="node"}'), total("egpu_operator_reconciles_total")


def wait_settled(operator: OperatorProcess, swept: float, quiet_s: float = 1.5, timeout_s: float = 60) -> None:
    """Until the node sweeps rose above ``swept`` and neither they nor the reconciles changed for
    ``quiet_s`` (longer than the operator's one sweep a second: both targets' uncordons are in)."""
    deadline = time.monotonic() + timeout_s
    last, since = counters(operator), time.monotonic()
    while last[0] <= swept or time.monotonic() - since < quiet_s:
        if time.monotonic() > deadline:
            raise SystemExit("bench: timed out waiting for the operator to see the uncordon")
        time.sleep(0.1)
        now = counters(operator)
        if now != last:
            last, since = now, time.monotonic()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--load-scale", type=float, default=1.0, help="simulated load time = estimate x this")
    args = parser.parse_args()

    profile = fleet(args.replicas)
    with LocalCluster(ensure_tools(), model_load_scale=args.load_scale) as cluster, tempfile.TemporaryDirectory() as scratch:
        kubectl = cluster.kubectl
        kubectl.apply_fleet(profile)
        kubectl.wait_nodes_ready(node.name for node in profile.nodes)
        install_crds(kubectl)
        for namespace in ("egpu-system", NAMESPACE):
            kubectl.run("create", "namespace", namespace)
        agents = FleetSimulator(profile, api_client(cluster.kubeconfig), "egpu-system", Path(scratch), poll_interval_s=1.0)
        agents.start()
        log = Path(tempfile.gettempdir()) / "egpu-bench-maintenance-operator.log"
        log.unlink(missing_ok=True)
        operator = OperatorProcess(cluster.kubeconfig, log)
        watcher = ReadyWatch(cluster.kubeconfig, NAMESPACE).start()
        try:
            operator.start()
            kubectl.wait_default_service_account(NAMESPACE)

            say(f"placing {args.replicas} replicas on {SOURCE}")
            place_on_source(kubectl, operator, args.replicas)
            say("GPUMaintenance: draining")
            watcher.reset()
            started = time.monotonic()
            kubectl.run("create", "-f", "-", stdin=json.dumps({
                "apiVersion": "egpu-operator.io/v1alpha1", "kind": "GPUMaintenance", "metadata": {"name": "bench"},
                "spec": {"nodeName": SOURCE, "reason": "benchmark"}}))  # fmt: skip
            planned: list[str] = []

            def maintenance_ready() -> bool:
                current = kubectl.get_json("gpumaint", "bench")
                found = (current.get("status") or {}).get("plannedReadyAt")
                if found and found not in planned:
                    planned.append(found)
                created.append(current["metadata"]["creationTimestamp"])
                return (current.get("status") or {}).get("phase") == "Ready"

            created: list[str] = []
            wait("the GPUMaintenance to reach Ready", maintenance_ready)
            maintenance_s = time.monotonic() - started
            planned_s = (_stamp(max(planned)) - _stamp(created[0])) if planned else float("nan")
            maintenance_min = watcher.minimum_total
            wait("replicas Ready elsewhere", lambda: ready_on(kubectl, None, args.replicas))
            kubectl.run("delete", "gpumaint", "bench", "--wait=true")

            say(f"placing {args.replicas} replicas on {SOURCE} again")
            place_on_source(kubectl, operator, args.replicas)
            say("kubectl drain: draining")
            watcher.reset()
            started = time.monotonic()
            kubectl.run("drain", SOURCE, "--ignore-daemonsets", "--timeout=300s")
            drain_s = time.monotonic() - started
            wait("replicas Ready elsewhere", lambda: ready_on(kubectl, None, args.replicas))
            restored_s = time.monotonic() - started
            drain_min = watcher.minimum_total
        finally:
            watcher.stop()
            operator.stop()
            agents.stop()

    n = args.replicas
    floor_s = (n + 1) // 2 * 6e9 / 856e6 * args.load_scale
    print(f"node with {n} replicas, 6 GB model over Gen3 x1 uplinks shared by each host's GPUs (856 MB/s: one load "
          f"alone 7.5 s, two at once 14.5 s, x {args.load_scale:g})")  # fmt: skip
    print(f"GPUMaintenance: Ready (node empty) after {maintenance_s:.1f} s; fewest Ready replicas {maintenance_min}/{n}")
    print(f"GPUMaintenance: last planned Ready time {planned_s:.0f} s after creation (status.plannedReadyAt, whole "
          f"seconds, for the loads then under way); uplink floor {floor_s:.1f} s ({(n + 1) // 2} x 6 GB over 856 MB/s); "
          f"simulated {maintenance_s:.1f} s = {maintenance_s / floor_s:.2f}x the floor")  # fmt: skip
    print(f"kubectl drain:  returned after {drain_s:.1f} s, service restored after {restored_s:.1f} s; "
          f"fewest Ready replicas {drain_min}/{n}")  # fmt: skip
    verdict = "no outage" if maintenance_min == n else "outage"
    print(f"ratios (GPUMaintenance / kubectl drain): time to empty node {maintenance_s / drain_s:.2f}x, "
          f"fewest Ready replicas {maintenance_min}/{drain_min} ({verdict})")  # fmt: skip
    return 0 if maintenance_min == n else 1


if __name__ == "__main__":
    sys.exit(main())
