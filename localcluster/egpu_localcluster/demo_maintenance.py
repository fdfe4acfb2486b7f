"""The maintenance part of ``make demo``: drain one edge node for service without dropping its model.

A GPUMaintenance is created for the node that holds a replica of llm-18gb; the demo prints
each change of the maintenance phase next to the deployment's Ready replicas, then where the
replica went, then completes the maintenance and shows the node back in service.
"""

import json
import time
from typing import Any

from egpu_api import keys
from egpu_localcluster.cluster import progress
from egpu_localcluster.kubectl import Kubectl, KubectlError
from egpu_localcluster.table import render

MAINTENANCE = "reseat-dock"


def show_maintenance(kubectl: Kubectl, deployment: str = "llm-18gb", timeout_s: float = 120) -> None:
    placements = (kubectl.get_json("idep", deployment).get("status") or {}).get("placements") or []
    if not placements:
        return
    node = max(placements, key=lambda p: p.get("estimatedLoadSeconds") or 0)["node"]  # the slowest link: an eGPU dock
    progress(f"GPU maintenance on {node}: kubectl apply a GPUMaintenance (reseat the eGPU dock)")
    body = {
        "apiVersion": f"{keys.API_GROUP}/{keys.API_VERSION}",
        "kind": "GPUMaintenance",
        "metadata": {"name": MAINTENANCE},
        "spec": {"nodeName": node, "reason": "reseat the eGPU dock", "drainTimeoutSeconds": 600},
    }
    kubectl.run("apply", "-f", "-", stdin=json.dumps(body))

    print(f"\n== GPUMaintenance {MAINTENANCE} on {node}: {deployment}'s Ready replicas never drop ==")
    rows: list[list[object]] = []
    started, last = time.monotonic(), None
    while True:
        status = kubectl.get_json("gpumaint", MAINTENANCE).get("status") or {}
        item = kubectl.get_json("idep", deployment)
        ready = f"{(item.get('status') or {}).get('readyReplicas', 0)}/{item['spec']['replicas']}"
        row = (status.get("phase", "Pending"), ready, status.get("message", ""))
        if row != last:
            rows.append([f"{time.monotonic() - started:5.1f} s", *row])
            last = row
        if status.get("phase") in ("Ready", "Failed"):
            break
        if time.monotonic() - started > timeout_s:
            raise KubectlError(
                f"maintenance did not reach Ready within {timeout_s:.0f} s; see operator.log in the cluster folder"
            )
        time.sleep(0.3)
    print(render(("T", "PHASE", f"{deployment} READY", "MESSAGE"), [[*r[:3], _short(str(r[3]))] for r in rows]))

    moved = status.get("moved") or []
    print("\n" + render(("REPLICA", "FROM POD", "TO POD", "TO NODE"),
                        [[f"{m['deployment']}#{m['replica']}", m["fromPod"], m.get("toPod", "-"), m.get("toNode", "-")]
                         for m in moved]))  # fmt: skip
    print(f"\nkubectl get node {node}: {_node_line(kubectl, node)}")
    progress('service done: kubectl patch gpumaint --type=merge -p \'{"spec":{"completed":true}}\'')
    kubectl.run("patch", "gpumaint", MAINTENANCE, "--type=merge", "-p", '{"spec": {"completed": true}}')
    deadline = time.monotonic() + 30
    while (kubectl.get_json("gpumaint", MAINTENANCE).get("status") or {}).get("phase") != "Completed":
        if time.monotonic() > deadline:
            raise KubectlError("maintenance did not complete within 30 s")
        time.sleep(0.3)
    print(f"after completion:  {_node_line(kubectl, node)}")
    print("\n" + kubectl.run("get", "gpumaint", "-o", "wide").stdout.rstrip())


def _node_line(kubectl: Kubectl, node: str) -> str:
    found: dict[str, Any] = kubectl.get_json("node", node)
    cordoned = "SchedulingDisabled (cordoned)" if found["spec"].get("unschedulable") else "schedulable"
    label = (found["metadata"].get("labels") or {}).get(keys.MAINTENANCE_LABEL)
    return f"{cordoned}, label {keys.MAINTENANCE_LABEL}={label or '(none)'}"


def _short(text: str, width: int = 90) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
