"""The GPUMaintenance controller's entry point: read the world of one maintenance, ask ``drain`` and
``controllers.gpumaintenance`` what to write, apply it (``controllers.applier``), report.

Every step starts from what the API server holds (the maintenance's status, the node, the
pods on it), so an operator killed in any phase resumes where it was: replacement pods have
stable names (a repeated create is a 409), evictions of gone pods are 404s, and the
administrator's cordon is written to status before the operator cordons the node.

The replicas themselves move through their InferenceDeployment's reconcile: a cordoned node
is no longer adequate, so a replacement is placed elsewhere, and the old pod is evicted once
the replacement is Ready (by that reconcile or by this controller, whichever comes first).
"""

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from egpu_api import keys
from egpu_api.maintenance import ACTIVE_PHASES, PHASES, TERMINAL_PHASES
from egpu_operator import drain, facts
from egpu_operator.cache import Cache
from egpu_operator.controllers import applier
from egpu_operator.controllers import gpumaintenance as controller
from egpu_operator.kube import Kube
from egpu_operator.metrics import DEFAULT, OperatorMetrics

log = logging.getLogger("egpu_operator.maintenance")

DeploymentKey = tuple[str, str]


def step(
    kube: Kube,
    cache: Cache,
    name: str,
    deployments: Callable[[DeploymentKey], Mapping[str, Any] | None],
    replica_pods: Callable[[DeploymentKey], Iterable[Mapping[str, Any]]],
    limit: int,
    now: datetime | None = None,
    dra_drivers: Sequence[str] = (keys.DRA_GPU_DRIVER,),
    shared: tuple[str, ...] = keys.SHARED_GPU_RESOURCES,
    recorder: OperatorMetrics = DEFAULT,
) -> str | None:
    """Move one maintenance forward; returns its phase afterwards (None once it is gone).

    Read (the maintenance, its node, the world of its pods), decide (``drain.decide``, then
    ``controller.decide``), apply, and report from what the evictions met."""
    everything = kube.list_maintenances()
    counts = controller.phases(everything)
    for phase in PHASES:
        recorder.maintenances.labels(phase).set(counts.get(phase, 0))
    maintenance = next((m for m in everything if m["metadata"]["name"] == name), None)
    if maintenance is None:
        return None
    view = controller.parse(maintenance, now or datetime.now(UTC))
    if isinstance(view, controller.Writes):  # a spec stored under an older schema: reported Failed
        applier.apply_maintenance(kube, cache, view, controller.Outcome())
        return "Failed"
    deleting = bool(maintenance["metadata"].get("deletionTimestamp"))
    if view.previous.phase == "Completed":  # the node was returned already: nothing to read
        if deleting:
            applier.apply_maintenance(kube, cache, controller.decide_deletion(view), controller.Outcome())
        return None if deleting else view.previous.phase
    view = replace(view, node=controller.node_state(kube.get_node(view.spec.node_name)))
    if deleting:
        applier.apply_maintenance(kube, cache, controller.decide_deletion(view), controller.Outcome())
        return None
    if view.previous.phase == "Failed" and not view.spec.completed:
        return view.previous.phase  # left for a human: set spec.completed or delete it
    return _move_on(kube, cache, view, everything, deployments, replica_pods, limit, dra_drivers, shared)


def _move_on(
    kube: Kube,
    cache: Cache,
    view: controller.View,
    everything: Sequence[Mapping[str, Any]],
    deployments: Callable[[DeploymentKey], Mapping[str, Any] | None],
    replica_pods: Callable[[DeploymentKey], Iterable[Mapping[str, Any]]],
    limit: int,
    dra_drivers: Sequence[str],
    shared: tuple[str, ...],
) -> str:
    """An open maintenance: the world it acts on, the drain's decision, its writes, then the report."""
    node = view.spec.node_name

    def read(moved: list[tuple[str, int]]) -> drain.World:
        pods_here = [(pod, _dra_gpus(kube, pod, dra_drivers)) for pod in kube.pods_on_node(node)]
        return controller.world(node, view.node, pods_here, deployments, replica_pods, moved, shared)

    seen = drain.World(node=view.node)
    if view.previous.phase == "Pending":
        created = view.maintenance["metadata"].get("creationTimestamp", "")
        seen = drain.World(node=view.node, slot_wait=drain.slot_wait(view.name, node, created, everything, limit))
    elif view.previous.phase in ACTIVE_PHASES and view.node.exists:
        seen = read(controller.moved_before(view.maintenance))
    decision = drain.decide(view.spec, view.previous, seen, view.now)
    if controller.moves_to_record(view, decision):
        seen = read([])
    outcome = applier.apply_maintenance(kube, cache, controller.decide(view, decision, seen), controller.Outcome())
    report = controller.decide_report(view, decision, seen, outcome)
    applier.apply_maintenance(kube, cache, report, outcome)
    if report.phase != view.previous.phase and report.status is not None:
        log.info("maintenance phase", extra={"maintenance": view.name, "node": node,
                                             "phase": report.phase, "why": report.status["message"]})  # fmt: skip
    return report.phase


def _dra_gpus(kube: Kube, pod: Mapping[str, Any], drivers: Sequence[str]) -> int:
    """GPUs the pod holds through DRA: devices of ``drivers`` its ResourceClaims were allocated (a read)."""
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return 0
    namespace = pod["metadata"]["namespace"]
    claims = (kube.get_resource_claim(namespace, name) for name in facts.pod_claim_names(pod))
    return sum(len(facts.claim_holds(claim, drivers)) for claim in claims if claim is not None)


def file_automatic(kube: Kube, cache: Cache, troubled: Mapping[str, str]) -> list[str]:
    """For nodes whose agent reports a lost GPU or a degraded link (node -> health), file a
    GPUMaintenance unless one is already open for the node. Returns the names created."""
    open_nodes = {
        m["spec"].get("nodeName")
        for m in kube.list_maintenances()
        if (m.get("status") or {}).get("phase", "Pending") not in TERMINAL_PHASES
    }
    created = []
    for node_name, health in sorted(troubled.items()):
        if node_name in open_nodes:
            continue
        node = kube.get_node(node_name)
        if node is None:
            continue
        condition = next(
            (c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == keys.GPU_HEALTHY_CONDITION),
            None,
        )
        if condition is None or condition.get("status") != "False":
            continue
        body = drain.auto_maintenance(node_name, health, condition.get("lastTransitionTime", ""), condition.get("message", ""))
        if not cache.first_filing(body["metadata"]["name"]):
            continue  # filed for this very problem already (perhaps completed while the GPU is still lost)
        if kube.create_maintenance(body):
            created.append(body["metadata"]["name"])
            log.warning("maintenance filed", extra={"node": node_name, "maintenance": body["metadata"]["name"],
                                                    "why": body["spec"]["reason"]})  # fmt: skip
    return created
