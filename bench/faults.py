"""Benchmark: what five edge faults cost the operator's replicas, against plain Deployments.

    python bench/faults.py [--faults one-agent,operator-paused,api-server,etcd,all-agents]

One local cluster, one run, real node agents on simulated hardware, the operator with its
default failure-safety settings (TTL 40 s, grace 20 s). Two services run side by side through
every fault:

- **operator**: InferenceDeployments ``chat`` (3 replicas, PodDisruptionBudget minAvailable 2)
  and ``embed`` (2 replicas, minAvailable 1), 5 replicas in all;
- **baseline**: plain Deployments of the same shape (same budgets), which kube-controller-manager
  does not delete on a control-plane outage: the bar the operator must meet.

The faults, each held for the time given, then recovered, then watched 30 s more:
one node agent stopped (until its replica has moved, at most 150 s), the operator SIGSTOPped
60 s, kube-apiserver SIGKILLed 30 s, etcd SIGKILLed 60 s, every node agent stopped 120 s.
A pod ledger per service (``egpu_localcluster.ledger``) records the fewest Ready replicas at
any moment, the pods deleted, and those deleted while their group was below its replica count
("lost": a removal without a Ready replacement). Target: in every row the operator keeps at
least as many Ready replicas as the baseline and loses no more pods.
"""

import argparse
import json
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from egpu_api.fleet import load_fleet
from egpu_localcluster import LocalCluster, ensure_tools
from egpu_localcluster.kubectl import Kubectl
from egpu_localcluster.ledger import PodLedger
from egpu_localcluster.operator_process import OperatorProcess, install_crds
from egpu_node_agent.simulator import FleetSimulator
from egpu_runtime.kube import api_client

SERVICE = {"chat": (3, 2), "embed": (2, 1)}  # name -> (replicas, minAvailable)
OPERATOR_NS, BASELINE_NS = "operator", "baseline"
BASELINE_LABEL = "bench.egpu-operator.io/group"
FAULTS = ("one-agent", "operator-paused", "api-server", "etcd", "all-agents")
WATCH_AFTER_S = 30.0


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def wait(what: str, probe: Callable[[], Any], timeout_s: float = 300) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := probe()):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.25)
    return result


def manifests() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    container = {"name": "server", "image": "registry.example/llm:1"}
    for name, (replicas, budget) in SERVICE.items():
        size = "4G" if name == "chat" else "1G"
        items.append({
            "apiVersion": "egpu-operator.io/v1alpha1", "kind": "InferenceDeployment",
            "metadata": {"name": name, "namespace": OPERATOR_NS},
            "spec": {"replicas": replicas, "model": {"name": name, "size": size},
                     "placement": {"maxLoadSeconds": 60, "allowedModes": ["bare-metal", "passthrough"]},
                     "disruption": {"minAvailable": budget}, "template": {"spec": {"containers": [container]}}},
        })  # fmt: skip
        labels = {BASELINE_LABEL: name}
        items.append({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": BASELINE_NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [container], "nodeSelector": {"type": "kwok"}}}},
        })  # fmt: skip
        items.append({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name, "namespace": BASELINE_NS},
            "spec": {"minAvailable": budget, "selector": {"matchLabels": labels}},
        })  # fmt: skip
    return items


def all_ready(kubectl: Kubectl) -> bool:
    try:
        for name, (replicas, _) in SERVICE.items():
            if (kubectl.get_json("idep", name, "-n", OPERATOR_NS).get("status") or {}).get("readyReplicas") != replicas:
                return False
            if (kubectl.get_json("deployment", name, "-n", BASELINE_NS).get("status") or {}).get("readyReplicas") != replicas:
                return False
    except Exception:  # the API server may still be coming back
        return False
    return True


class Bench:
    def __init__(self, cluster: LocalCluster, agents: FleetSimulator, operator: OperatorProcess) -> None:
        self.cluster, self.agents, self.operator = cluster, agents, operator
        self.kubectl = cluster.kubectl

    def node_of_a_chat_replica(self) -> str:
        pods = self.kubectl.get_json("pods", "-n", OPERATOR_NS, "-l", "egpu-operator.io/inference-deployment=chat")["items"]
        return str(sorted(pod["spec"]["nodeName"] for pod in pods)[0])

    @staticmethod
    def ready(ledger: PodLedger) -> bool:
        """Every replica Ready, as its pods say (a controller's status may lag: kube-controller-manager
        exits when it loses its leader lease in an outage, until it is started again)."""
        return all(ledger.ready(name) == count for name, (count, _) in SERVICE.items())

    def fault(self, name: str) -> tuple[Callable[[], None], Callable[[], None], float, Callable[[], bool] | None]:
        """(inject, recover, seconds to hold, or a condition that ends the hold early)."""
        cluster, agents = self.cluster, self.agents
        if name == "one-agent":
            victim = self.node_of_a_chat_replica()

            def moved() -> bool:
                pods = self.kubectl.get_json("pods", "-n", OPERATOR_NS, "-l", "egpu-operator.io/inference-deployment=chat")
                return victim not in {pod["spec"].get("nodeName") for pod in pods["items"]} and all_ready(self.kubectl)

            return lambda: agents.stop_agents([victim]), lambda: agents.start_agents([victim]), 150, moved
        if name == "operator-paused":
            return lambda: self.operator.signal(signal.SIGSTOP), lambda: self.operator.signal(signal.SIGCONT), 60, None
        if name in ("api-server", "etcd"):
            component = "kube-apiserver" if name == "api-server" else "etcd"

            def kill() -> None:
                cluster.kill_component(component)

            def start() -> None:
                cluster.restart_stopped()

            return kill, start, 30 if name == "api-server" else 60, None
        everyone = list(agents.agents)
        return lambda: agents.stop_agents(everyone), lambda: agents.start_agents(everyone), 120, None

    def run(self, name: str) -> dict[str, tuple[int, int, int]]:
        """For each service: (fewest Ready replicas, pods deleted, pods lost)."""
        inject, recover, hold_s, done = self.fault(name)
        ledgers = {
            "operator": PodLedger(self.kubectl.kubeconfig, OPERATOR_NS, SERVICE),
            "baseline": PodLedger(self.kubectl.kubeconfig, BASELINE_NS, SERVICE, label=BASELINE_LABEL),
        }
        for ledger in ledgers.values():
            ledger.__enter__()
        say(f"{name}: injecting, holding up to {hold_s:.0f} s")
        inject()
        try:
            deadline = time.monotonic() + hold_s
            while time.monotonic() < deadline and not (done and done()):
                time.sleep(1.0)
        finally:
            recover()
        back = time.monotonic()
        wait("both services Ready again", lambda: all(self.ready(ledger) for ledger in ledgers.values()), 300)
        say(f"{name}: recovered, service Ready {time.monotonic() - back:.1f} s after; watching {WATCH_AFTER_S:.0f} s more")
        time.sleep(WATCH_AFTER_S)  # a defect here would show as deletions after the fault ended
        self.cluster.restart_stopped()  # a controller that lost its leader lease in the outage exits
        wait("the operator's status to agree", lambda: all_ready(self.kubectl), 120)
        result = {}
        for service, ledger in ledgers.items():
            ledger.__exit__()
            fewest = sum(ledger.minimum.values())
            lost = sum(1 for _, pod, ready in ledger.deleted if ready < SERVICE[pod.split("-")[0]][0])
            result[service] = (fewest, len(ledger.deleted), lost)
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of {', '.join(FAULTS)}")
    args = parser.parse_args()
    chosen = [name for name in args.faults.split(",") if name]
    if unknown := set(chosen) - set(FAULTS):
        parser.error(f"--faults: unknown {', '.join(sorted(unknown))}; choose from {', '.join(FAULTS)}")

    profile = load_fleet()
    results: dict[str, dict[str, tuple[int, int, int]]] = {}
    with LocalCluster(ensure_tools(), model_load_scale=0.1) as cluster, tempfile.TemporaryDirectory() as scratch:
        kubectl = cluster.kubectl
        kubectl.apply_fleet(profile)
        kubectl.wait_nodes_ready(node.name for node in profile.nodes)
        install_crds(kubectl)
        for namespace in ("egpu-system", OPERATOR_NS, BASELINE_NS):
            kubectl.run("create", "namespace", namespace)
            kubectl.wait_default_service_account(namespace)
        agents = FleetSimulator(profile, api_client(cluster.kubeconfig), "egpu-system", Path(scratch), poll_interval_s=1.0)
        agents.start()
        log_path = Path(tempfile.gettempdir()) / "egpu-bench-faults-operator.log"
        log_path.unlink(missing_ok=True)
        operator = OperatorProcess(cluster.kubeconfig, log_path)
        try:
            operator.start()
            kubectl.run("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests()}))
            wait("both services Ready", lambda: all_ready(kubectl))
            bench = Bench(cluster, agents, operator)
            for name in chosen:
                results[name] = bench.run(name)
        finally:
            if operator.process is not None:
                operator.signal(signal.SIGCONT)
            operator.stop()
            agents.stop()
        say(f"operator log: {log_path}")

    total = sum(count for count, _ in SERVICE.values())
    print(f"{total} replicas per service (chat 3, minAvailable 2; embed 2, minAvailable 1); lost = deleted while below the count")
    print(f"{'fault':<16} {'operator: fewest Ready / deleted / lost':<42} {'baseline Deployments: same':<30} target")
    ok = True
    for name, rows in results.items():
        (op_ready, op_deleted, op_lost), (base_ready, base_deleted, base_lost) = rows["operator"], rows["baseline"]
        met = op_ready >= base_ready and op_lost <= base_lost
        ok &= met
        print(f"{name:<16} {f'{op_ready}/{total} / {op_deleted} / {op_lost}':<42} "
              f"{f'{base_ready}/{total} / {base_deleted} / {base_lost}':<30} {'met' if met else 'MISSED'}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
