"""The one place the controllers' writes reach the API server (the API layer).

``apply`` (InferenceDeployment) and ``apply_maintenance`` (GPUMaintenance) perform a
``Writes`` in its field order through ``kube`` and record what happened in an ``Outcome``: a
refused pod, eviction, Service or status is data there, never an exception that skips the
writes after it. The ``Cache`` hears what it must remember (a refused pod's GPU is forgotten
at once; a budget written; an Event told once).
"""

import logging
from collections.abc import Mapping

from egpu_api import keys
from egpu_operator import power
from egpu_operator.cache import Cache
from egpu_operator.controllers import gpumaintenance as maintenance
from egpu_operator.controllers.inferencedeployment import Event, Outcome, PodCreate, Writes
from egpu_operator.kube import Kube, PodRefused, StatusRefused
from egpu_operator.placement import PodView

log = logging.getLogger("egpu_operator.reconcile")
maintenance_log = logging.getLogger("egpu_operator.maintenance")


def apply(kube: Kube, cache: Cache, writes: Writes, outcome: Outcome) -> Outcome:
    """Deletes, evictions, stale claims, creates; the finalizer, power, budget, Service; Events; status."""
    _remove_pods(kube, cache, writes, outcome)
    for claim in writes.claim_deletes:
        kube.delete_resource_claim(_namespace(writes), claim)
        log.info("resource claim removed", extra={"deployment": writes.key, "claim": claim, "why": "its pod is gone"})
    for create in writes.creates:
        _create(kube, cache, writes, create, outcome)
    if writes.finalizer:
        kube.add_finalizer(_namespace(writes), _name(writes), keys.POWER_FINALIZER)
    for want in writes.power:
        outcome.power[want.node] = (want, _write_power(kube, want))
    _apply_budget(kube, cache, writes)
    _apply_service(kube, writes, outcome)
    for event in writes.events:
        _tell(kube, cache, writes, event)
    if writes.status is not None:
        try:
            kube.patch_status(_namespace(writes), _name(writes), writes.status)
        except StatusRefused as refusal:
            outcome.status_refusal = str(refusal)
            log.warning("status refused", extra={"deployment": writes.key, "why": str(refusal)})
    return outcome


def _remove_pods(kube: Kube, cache: Cache, writes: Writes, outcome: Outcome) -> None:
    """Deletes, then evictions; a refused eviction keeps its pod and asks for a retry."""
    for pod_name in writes.deletes:
        kube.delete_pod(_namespace(writes), pod_name)
        outcome.deleted.add(pod_name)
        log.info("replica removed", extra={"deployment": writes.key, "pod": pod_name, "why": writes.why.get(pod_name, "")})
    for pod_name in writes.evictions:
        refusal = cache.evictions.evict(kube, _namespace(writes), pod_name, "deployment")
        if refusal is None:
            outcome.deleted.add(pod_name)
            log.info("replica evicted", extra={"deployment": writes.key, "pod": pod_name, "why": writes.why.get(pod_name, "")})
        else:
            outcome.retry = True
            log.info("eviction refused", extra={"deployment": writes.key, "pod": pod_name, "why": refusal})
    outcome.after = [pod for pod in outcome.after if pod.name not in outcome.deleted]


def _create(kube: Kube, cache: Cache, writes: Writes, made: PodCreate, outcome: Outcome) -> None:
    """The pod; with DRA its ResourceClaim first, so the scheduler never sees the pod without it
    (it would call the pod unschedulable, and placement would take that for a refusal)."""
    pod_name, namespace = made.manifest["metadata"]["name"], made.manifest["metadata"]["namespace"]
    replica = made.create.replica
    try:
        if made.claim is not None:
            kube.create_resource_claim(made.claim)
        fresh = kube.create_pod(made.manifest)
    except PodRefused as refusal:
        # Release the GPU now: a refusal holding a reservation would starve every other deployment.
        cache.forget(pod_name)
        if made.claim is not None:
            kube.delete_resource_claim(namespace, pod_name)
        outcome.refusals.append(f"replica {replica}: {refusal}")
        log.warning("replica pod refused", extra={"deployment": writes.key, "replica": replica, "why": str(refusal)})
        return
    if fresh:  # not a 409 of an interrupted run repeated: that one was told the first time
        _tell(kube, cache, writes, made.event)
        where = {"node": made.create.node, "load_s": round(made.create.load_seconds, 1), "bottleneck": made.create.bottleneck}
        log.info("replica placed", extra={"deployment": writes.key, "replica": replica, **where})
    outcome.created.add(pod_name)
    outcome.after.append(PodView(pod_name, replica, made.create.node))


class _PowerWrite:
    """The read-modify-write of one node's power annotations: each read (a conflict makes the API layer
    read again) is merged with the want by the pure ``power.node_decision``; the last one is what was written."""

    def __init__(self, want: power.PowerWant) -> None:
        self.want = want
        self.decided = power.node_decision(want, {})

    def change(self, annotations: Mapping[str, str]) -> dict[str, str]:
        self.decided = power.node_decision(self.want, annotations)
        return self.decided.values


def _write_power(kube: Kube, want: power.PowerWant) -> power.PowerDecision:
    write = _PowerWrite(want)
    kube.update_node_annotations(want.node, write.change)
    return write.decided


def _apply_budget(kube: Kube, cache: Cache, writes: Writes) -> None:
    budget = writes.budget
    if budget is None:
        return
    if budget.manifest is None:
        kube.delete_pdb(_namespace(writes), _name(writes))
    else:
        kube.apply_pdb(budget.manifest)
    cache.budget_written(writes.key, budget.min_available)


def _apply_service(kube: Kube, writes: Writes, outcome: Outcome) -> None:
    wanted = writes.service
    if wanted is None:
        return
    if wanted.manifest is None:
        kube.delete_service(_namespace(writes), _name(writes))
        log.info("service deleted", extra={"deployment": writes.key})
        return
    outcome.service_refusal = kube.apply_service(wanted.manifest, exists=wanted.exists)
    if outcome.service_refusal is None:
        log.info("service applied", extra={"deployment": writes.key})


def _tell(kube: Kube, cache: Cache, writes: Writes, event: Event) -> None:
    if event.once is not None and not cache.first_report(*event.once):
        return
    kube.event(writes.subject, event.reason, event.message, warning=event.warning)
    if event.warning:
        log.warning(event.reason, extra={"deployment": writes.key, "why": event.message})


def _namespace(writes: Writes) -> str:
    return str(writes.subject["metadata"]["namespace"])


def _name(writes: Writes) -> str:
    return str(writes.subject["metadata"]["name"])


# -- GPUMaintenance ---------------------------------------------------------------------------------


def apply_maintenance(kube: Kube, cache: Cache, writes: maintenance.Writes, outcome: maintenance.Outcome) -> maintenance.Outcome:
    """The finalizer added, the cordon recorded, the node patched, the evictions (an Event for each
    made), the Events, the status, the finalizer released; refused evictions land in ``outcome``."""
    if writes.add_finalizer is not None:
        kube.set_maintenance_finalizers(writes.name, writes.add_finalizer.resource_version, writes.add_finalizer.finalizers)
    if writes.cordon_record is not None:
        kube.patch_maintenance_status(writes.name, writes.cordon_record)
    if writes.node_patch is not None:
        kube.patch_node(writes.node, writes.node_patch)
    for eviction in writes.evictions:
        _evict(kube, cache, writes, eviction, outcome)
    for event in writes.events:
        kube.maintenance_event(writes.subject, event.reason, event.message, warning=event.warning)
    if writes.status is not None:
        kube.patch_maintenance_status(writes.name, writes.status)
    if writes.release_finalizer is not None:
        release = writes.release_finalizer
        kube.set_maintenance_finalizers(writes.name, release.resource_version, release.finalizers)
    return outcome


def _evict(
    kube: Kube, cache: Cache, writes: maintenance.Writes, eviction: maintenance.Eviction, outcome: maintenance.Outcome
) -> None:
    pod = eviction.pod
    refusal = cache.evictions.evict(kube, pod.namespace, pod.name, "maintenance")
    if refusal is not None:
        outcome.refused[pod.key] = refusal
        return
    maintenance_log.info("pod evicted", extra={"maintenance": writes.name, "pod": pod.key, "why": eviction.why})
    kube.maintenance_event(writes.subject, "Evicted", f"evicted {pod.key}: {eviction.why}")
    if not eviction.replaced and pod.key not in outcome.evicted:
        outcome.evicted.append(pod.key)  # unmanaged, or a replica dropped under AllowReducedCapacity
