"""One reconcile of one InferenceDeployment: the entry point ``runtime`` calls, and the fleet view it hands in.

The controller itself is ``controllers.inferencedeployment`` (gather, decide) and
``controllers.applier`` (apply); this module sequences its rounds, holds the placement lock
while the planner chooses, and keeps the names the runtime imports (``Fleet``, ``reconcile``,
``release_power``, ``POWER_FINALIZER``).
"""

import logging
import time
from collections.abc import Container, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from egpu_api import keys
from egpu_api.power import PowerLimitStatus
from egpu_operator import fit, metrics, pods, power
from egpu_operator.cache import Cache
from egpu_operator.controllers import applier
from egpu_operator.controllers import inferencedeployment as controller
from egpu_operator.controllers.inferencedeployment import Invalid, Outcome, View, Writes
from egpu_operator.kube import Kube
from egpu_operator.liveness import Verdicts
from egpu_operator.placement import Device, NodeFacts, Plan, PodView, plan

log = logging.getLogger("egpu_operator.reconcile")
POWER_FINALIZER = keys.POWER_FINALIZER


class Fleet:
    """What the indexes know, as placement wants it. Built per reconcile from live index views."""

    def __init__(
        self,
        cache: Cache,
        nodes: Mapping[str, Mapping[str, Any]],
        verdicts: Verdicts,
        requested: Mapping[str, Mapping[str, int]],
    ) -> None:
        """``requested``: what the pods bound to each node request, every pod, not only replicas
        (``facts.requested_per_node``); free GPUs are the node's GPU resource less its share of it."""
        self.facts: dict[str, NodeFacts]
        self.power_status: dict[str, dict[str, PowerLimitStatus]]
        self.facts, self.power_status = cache.node_facts(nodes, verdicts.__getitem__)
        self.requested = {name: dict(asks) for name, asks in requested.items()}
        self.free = {
            name: facts.gpu_allocatable - self.requested.get(name, {}).get(facts.gpu_resource, 0)
            for name, facts in self.facts.items()
        }
        self.gpu_pods: set[str] = set()  # names of pods the GPU-usage index already counts
        # Replica pods (of every deployment) still loading their model, per node: loads share a
        # node's storage and shared links, so placement counts them.
        self.loading: dict[str, int] = {}
        # GPU memory the node's GPU pods hold, in MiB (a pod that does not say: a whole GPU's worth).
        self.vram_used: dict[str, int] = {}
        self.dra_device_class = keys.DRA_GPU_DEVICE_CLASS  # what a DRA replica's ResourceClaim asks for

    def add_devices(self, published: Mapping[str, Iterable[Iterable[Device]]], held: Container[str]) -> None:
        """GPUs published through DRA (``published``: node -> the devices of each of its ResourceSlices),
        each taken one in ``requested`` under its ``Device.key`` (``held``: ``Device.path`` of every device
        a ResourceClaim holds or a replica's claim was made for)."""
        for node, slices in published.items():
            if node not in self.facts:
                continue
            devices = tuple(device for found in slices for device in found)
            self.facts[node] = replace(self.facts[node], devices=devices)
            taken = self.requested.setdefault(node, {})
            taken.update({device.key: 1 for device in devices if device.path in held})


def reconcile(
    kube: Kube,
    cache: Cache,
    deployment: Mapping[str, Any],
    fleet: Fleet,
    replica_pods: Iterable[PodView],
    pdb_min_available: int | None = None,
    service_now: Mapping[str, Any] | None = None,
    claims: Iterable[str] = (),
    recorder: metrics.OperatorMetrics = metrics.DEFAULT,
) -> bool:
    """Bring one deployment's pods, power limits, disruption budget and Service toward its spec.

    ``pdb_min_available`` is what its PodDisruptionBudget holds now (None: none), ``service_now``
    its Service as the index shows it (``service.view``; None: none), ``claims`` the names of the
    ResourceClaims the operator made for its DRA replicas. Returns True
    when it should run again after a backoff: an eviction was refused (a PodDisruptionBudget
    said no) or the API server refused a replica pod (quota, Pod Security, an invalid template).
    ``recorder``: where its metrics go (the process's by default)."""
    now = datetime.now(UTC)
    key = controller.key_of(deployment)
    parsed = controller.parse(deployment)
    if isinstance(parsed, Invalid):
        return _report_invalid(kube, cache, parsed, now, recorder)
    pods_now = list(replica_pods)
    if not cache.caught_up(key, pods_now):
        recorder.reconciles.labels("waiting").inc()
        return False  # the pod events still on their way will bring it back
    pending = cache.budget_pending(key, controller.wanted_budget(parsed[0]), pdb_min_available)
    view = controller.gather(deployment, parsed, fleet, pods_now, pending, service_now, claims, now)
    result = _place(cache, view, fleet, recorder)
    outcome = applier.apply(kube, cache, controller.decide(view, result), Outcome(after=list(view.pods)))
    if outcome.created or outcome.deleted:
        cache.expect(key, outcome.created, outcome.deleted)
    applier.apply(kube, cache, controller.decide_nodes(view, outcome.after), outcome)
    report = controller.decide_report(view, result, outcome)
    applier.apply(kube, cache, report, outcome)
    applier.apply(kube, cache, controller.decide_status_refused(view, outcome), outcome)
    _observe(cache, view, result, outcome, report, recorder)
    # A refusal (pod, eviction, status) is asked again with the work queue's backoff, not at once.
    return outcome.retry or bool(outcome.refusals) or outcome.status_refusal is not None


def _observe(cache: Cache, view: View, result: Plan, outcome: Outcome, report: Writes, recorder: metrics.OperatorMetrics) -> None:
    """The deployment's metrics, and whether it counts as infeasible."""
    stuck = bool(result.unplaced or result.unschedulable or outcome.refusals)
    cache.infeasible(view.key, stuck)
    placed = view.current.get("conditions") or []
    if report.status is not None:
        placed = report.status["conditions"]
    ok = next((c.get("status") for c in placed if c.get("type") == "Placed"), "False") == "True"
    recorder.reconciles.labels("placed" if ok else "unplaced").inc()
    ready = (report.status or view.current).get("readyReplicas") or 0
    recorder.observe_deployment(view.metadata["namespace"], view.metadata["name"], view.spec.replicas, int(ready), stuck)


def _report_invalid(kube: Kube, cache: Cache, invalid: Invalid, now: datetime, recorder: metrics.OperatorMetrics) -> bool:
    outcome = applier.apply(kube, cache, controller.decide_invalid(invalid, now), Outcome(after=[]))
    applier.apply(kube, cache, controller.decide_status_refused(invalid, outcome), outcome)
    recorder.reconciles.labels("invalid").inc()
    return False


def _place(cache: Cache, view: View, fleet: Fleet, recorder: metrics.OperatorMetrics) -> Plan:
    """One placement decision at a time, against free GPUs and resources less those assumed for pods
    not yet seen; what it chooses for new pods is assumed taken until the usage index counts them.
    Nodes where the scheduler refused this deployment's pods lately are left out (``Cache.scheduler_refusals``)."""
    refused, refused_lately = cache.scheduler_refusals(view.key, view.pods)
    with cache.placing:
        free = cache.free_gpus(fleet.free, fleet.gpu_pods)
        # A pod created a moment ago, not yet in the indexes, is loading too: another deployment's
        # reconcile must not put a second load on a shared uplink it cannot see yet.
        loading = dict(fleet.loading)
        for node in cache.reserved().values():
            loading[node] = loading.get(node, 0) + 1
        started = time.perf_counter()
        requested = cache.requested(fleet.requested)
        result = plan(
            view.demand, view.spec.replicas, list(fleet.facts.values()), free, view.pods, loading, fleet.vram_used,
            requested, refused, refused_lately,
        )  # fmt: skip
        recorder.placement_seconds.observe(time.perf_counter() - started)
        for create in result.creates:
            asks = fit.take(view.demand.requests, create.holds)
            cache.assume(pods.pod_name(view.metadata["name"], create.replica, create.node), create.node, asks)
    return result


def release_power(kube: Kube, deployment: Mapping[str, Any], nodes: Iterable[str]) -> None:
    """On deletion: drop this deployment's power requests so the agents restore the default limits."""
    metadata = deployment["metadata"]
    owner = controller.key_of(deployment)
    for node_name in sorted(set(nodes)):
        try:
            kube.update_node_annotations(node_name, lambda annotations: power.release(owner, annotations))
        except Exception as error:
            log.warning("could not release power limits", extra={"node": node_name, "error": str(error)})
    kube.remove_finalizer(metadata["namespace"], metadata["name"], POWER_FINALIZER, list(metadata.get("finalizers") or []))


key_of = controller.key_of
pod_writes = controller.pod_writes
stale_claims = controller.stale_claims
