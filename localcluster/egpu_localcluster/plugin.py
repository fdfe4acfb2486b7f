"""``kubectl egpu``: what the operator decided and why, for any live cluster (a kubectl plugin).

    kubectl egpu fleet                      # every GPU node as its agent published it
    kubectl egpu placements [-n NS | -A]    # where each replica went, its link and load time
    kubectl egpu why NAME [-n NS]           # each node's verdict for one InferenceDeployment
    kubectl egpu maintenance                # GPUMaintenances: node, phase, what each waits for

Installed as the console script ``kubectl-egpu``, so kubectl finds it on PATH. It reads the
cluster through kubectl (``--kubectl``, default the one on PATH) with ``--kubeconfig``, else
``$KUBECONFIG``, else ``~/.kube/config``; it only reads.
"""

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from egpu_api import keys
from egpu_localcluster.demo import label_table, placement_table, verdict_table
from egpu_localcluster.kubectl import Kubectl, KubectlError
from egpu_localcluster.table import render
from egpu_operator.explain import ExplainError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubectl egpu", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path, default=None, help="default: $KUBECONFIG, else ~/.kube/config")
    parser.add_argument("--kubectl", default="kubectl", help="the kubectl binary to read the cluster with")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fleet", help="every GPU node as its agent published it (worst GPU per node)")
    placements = commands.add_parser("placements", help="where each replica went, its link and estimated load")
    placements.add_argument("-n", "--namespace", default="default", help="namespace of the InferenceDeployments")
    placements.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    why = commands.add_parser("why", help="each node's verdict for one InferenceDeployment")
    why.add_argument("name", help="the InferenceDeployment")
    why.add_argument("-n", "--namespace", default="default", help="its namespace")
    why.add_argument("--agent-namespace", default="egpu-system", help="namespace of the node agents' Leases")
    commands.add_parser("maintenance", help="GPUMaintenances: node, phase, what each waits for, replicas moved")
    args = parser.parse_args(argv)

    binary = shutil.which(args.kubectl)
    if binary is None:
        print(f"kubectl egpu: no {args.kubectl!r} on PATH; install kubectl or pass --kubectl", file=sys.stderr)
        return 2
    kubectl = Kubectl(Path(binary), args.kubeconfig or _default_kubeconfig())
    try:
        print(_COMMANDS[args.command](kubectl, args))
    except (KubectlError, ExplainError) as error:
        print(f"kubectl egpu: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader (head, less) left early: nothing more to say
        sys.stderr.close()
        return 141
    return 0


def _default_kubeconfig() -> Path:
    configured = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    return Path(configured) if configured else Path.home() / ".kube" / "config"


def fleet(kubectl: Kubectl, _: argparse.Namespace) -> str:
    nodes = [n for n in kubectl.get_json("nodes")["items"] if keys.LABEL_SCHEMA_LABEL in n["metadata"].get("labels", {})]
    return label_table(nodes) if nodes else "no node carries egpu-operator labels: is the node agent running?"


def placements(kubectl: Kubectl, args: argparse.Namespace) -> str:
    scope = ["--all-namespaces"] if args.all_namespaces else ["-n", args.namespace]
    items = kubectl.get_json("inferencedeployments", *scope)["items"]
    if args.all_namespaces:
        for item in items:
            item["metadata"]["name"] = f"{item['metadata']['namespace']}/{item['metadata']['name']}"
    return placement_table(items) if items else "no InferenceDeployments here"


def why(kubectl: Kubectl, args: argparse.Namespace) -> str:
    item = kubectl.get_json("inferencedeployment", args.name, "-n", args.namespace)
    nodes = kubectl.get_json("nodes")["items"]
    leases = kubectl.get_json("leases", "-n", args.agent_namespace)["items"]
    pods = kubectl.get_json("pods", "--all-namespaces")["items"]
    conditions = (item.get("status") or {}).get("conditions") or []
    placed = next((c for c in conditions if c.get("type") == "Placed"), None)
    head = f"Placed={placed['status']} {placed['reason']}: {placed['message']}" if placed else "not reconciled yet"
    return f"{args.namespace}/{args.name}: {head}\n{verdict_table(item, nodes, leases, pods)}"


def maintenance(kubectl: Kubectl, _: argparse.Namespace) -> str:
    rows: list[list[object]] = []
    for item in kubectl.get_json("gpumaintenances")["items"]:
        status = item.get("status") or {}
        waiting = next((c for c in status.get("conditions") or [] if c.get("status") == "False"), None)
        moved = ", ".join(f"{m.get('fromPod')} -> {m.get('toNode')}" for m in status.get("moved") or []) or "-"
        rows.append([item["metadata"]["name"], item["spec"]["nodeName"], status.get("phase", "-"),
                     waiting["message"] if waiting else "-", moved])  # fmt: skip
    if not rows:
        return "no GPUMaintenances"
    return render(("NAME", "NODE", "PHASE", "WAITING FOR", "MOVED"), rows)


_COMMANDS: dict[str, Any] = {"fleet": fleet, "placements": placements, "why": why, "maintenance": maintenance}


if __name__ == "__main__":
    sys.exit(main())
