"""One reconcile of one InferenceDeployment: facts from the indexes, a plan, its execution, a status.

Everything it decides comes from pure modules; this module only sequences them and hands
writes to ``kube``. It is idempotent: run twice on the same state, the second run writes
nothing (pod names are stable, so an interrupted run that is repeated gets 409 and moves on).
"""

import logging
import time
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from egpu_api import keys
from egpu_api.inference import InferenceDeploymentSpec, InferenceDeploymentStatus
from egpu_api.power import PowerLimitStatus
from egpu_operator import fit, metrics, pods, power, service, status
from egpu_operator.cache import Cache
from egpu_operator.kube import Kube, PodRefused, StatusRefused
from egpu_operator.liveness import Verdicts
from egpu_operator.placement import Create, Demand, Device, NodeFacts, Plan, PodView, plan

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


@dataclass
class PodWrites:
    """The pod writes one reconcile intends, decided before any is made: replicas to delete (scale
    down, node gone, GPU lost), to evict (a replacement is Ready), and to create (with manifests)."""

    deletes: list[str]
    evictions: list[str]
    creates: list[tuple[Create, dict[str, Any]]]
    why: Mapping[str, str]
    # DRA: the ResourceClaim each new pod uses (by pod name), created before it; and the claims of
    # pods that are gone, deleted.
    claims: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    claim_deletes: list[str] = field(default_factory=list)


@dataclass
class PodOutcome:
    """What the API server made of ``PodWrites``."""

    after: list[PodView]  # the replicas as they stand now
    created: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    refusals: list[str] = field(default_factory=list)  # the API server's reasons for pods it refused
    retry: bool = False  # an eviction was refused


def reconcile(
    kube: Kube,
    cache: Cache,
    deployment: Mapping[str, Any],
    fleet: Fleet,
    replica_pods: Iterable[PodView],
    pdb_min_available: int | None = None,
    service_now: Mapping[str, Any] | None = None,
    claims: Iterable[str] = (),
) -> bool:
    """Bring one deployment's pods, power limits, disruption budget and Service toward its spec.

    ``pdb_min_available`` is what its PodDisruptionBudget holds now (None: none), ``service_now``
    its Service as the index shows it (``service.view``; None: none), ``claims`` the names of the
    ResourceClaims the operator made for its DRA replicas. Returns True
    when it should run again after a backoff: an eviction was refused (a PodDisruptionBudget
    said no) or the API server refused a replica pod (quota, Pod Security, an invalid template)."""
    metadata = deployment["metadata"]
    key = f"{metadata['namespace']}/{metadata['name']}"
    now = datetime.now(UTC)
    try:
        spec = InferenceDeploymentSpec.model_validate(deployment["spec"])
        demand = Demand.of_spec(spec, metadata["name"])
    except (ValidationError, ValueError) as error:
        # The API server validates specs; this guards against objects stored before a schema change.
        _report_invalid(kube, deployment, f"spec cannot be used: {error}".splitlines()[0], now)
        return False
    pods_now = list(replica_pods)
    if not cache.caught_up(key, pods_now):
        metrics.RECONCILES.labels("waiting").inc()
        return False  # the pod events still on their way will bring it back

    result = _place(cache, key, demand, spec.replicas, fleet, pods_now)
    writes = pod_writes(deployment, result, fleet.dra_device_class, stale_claims(claims, pods_now))
    outcome = apply_pod_writes(kube, cache, deployment, writes, pods_now)
    if outcome.created or outcome.deleted:
        cache.expect(key, outcome.created, outcome.deleted)
    power_by_pod, power_waiting = apply_power(kube, cache, deployment, spec, fleet.facts, outcome.after)
    apply_disruption_budget(kube, cache, deployment, spec, pdb_min_available)
    apply_service(kube, cache, deployment, spec, service_now)
    new_status = status.build(
        deployment, demand, result, outcome.after, fleet.facts, power_by_pod, fleet.power_status, now, outcome.refusals,
        power_waiting,
    )  # fmt: skip
    status_refused = _report(kube, cache, deployment, new_status, bool(outcome.refusals))
    stuck = bool(result.unplaced or result.unschedulable or outcome.refusals)
    cache.infeasible(key, stuck)
    metrics.observe_deployment(
        metadata["namespace"], metadata["name"], spec.replicas, int(new_status.get("readyReplicas") or 0), stuck
    )  # fmt: skip
    # A refusal (pod, eviction, status) is asked again with the work queue's backoff, not at once.
    return outcome.retry or bool(outcome.refusals) or status_refused


def _place(cache: Cache, key: str, demand: Demand, replicas: int, fleet: Fleet, pods_now: list[PodView]) -> Plan:
    """One placement decision at a time, against free GPUs and resources less those assumed for pods
    not yet seen; what it chooses for new pods is assumed taken until the usage index counts them.
    Nodes where the scheduler refused this deployment's pods lately are left out (``Cache.scheduler_refusals``)."""
    name = key.split("/", 1)[1]
    refused, refused_lately = cache.scheduler_refusals(key, pods_now)
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
            demand, replicas, list(fleet.facts.values()), free, pods_now, loading, fleet.vram_used, requested, refused,
            refused_lately,
        )  # fmt: skip
        metrics.PLACEMENT_SECONDS.observe(time.perf_counter() - started)
        for create in result.creates:
            asks = fit.take(demand.requests, create.holds)
            cache.assume(pods.pod_name(name, create.replica, create.node), create.node, asks)
    return result


def pod_writes(
    deployment: Mapping[str, Any], result: Plan, device_class: str = keys.DRA_GPU_DEVICE_CLASS, claim_deletes: Iterable[str] = ()
) -> PodWrites:
    """The plan as intended writes, with the manifests of the pods (and DRA claims) to create. Pure."""
    creates, claims = [], {}
    for create in result.creates:
        manifest = pods.replica_pod(
            deployment, create.replica, create.node, create.load_seconds, create.vram_mib, create.gpu_resource,
            dra=create.device is not None,
        )  # fmt: skip
        creates.append((create, manifest))
        if create.device is not None:
            claims[manifest["metadata"]["name"]] = pods.resource_claim(
                deployment, manifest, create.device.path, create.device.uuid, device_class
            )
    # A claim about to be made again (the same pod name) is kept: deleting it would race its creation.
    stale = [name for name in claim_deletes if name not in claims]
    return PodWrites(list(result.deletes), list(result.evictions), creates, result.why, claims, stale)


def stale_claims(claims: Iterable[str], pods_now: Iterable[PodView]) -> list[str]:
    """The replicas' ResourceClaims whose pod is gone (claims are named as their pods): a claim kept
    would hold its device after the scheduler's allocation lapses. A terminating pod keeps its claim."""
    alive = {pod.name for pod in pods_now}
    return sorted(name for name in claims if name not in alive)


def apply_pod_writes(
    kube: Kube, cache: Cache, deployment: Mapping[str, Any], writes: PodWrites, pods_now: list[PodView]
) -> PodOutcome:
    """Deletes, then evictions, then creates; a refused eviction keeps its pod, a refused pod
    releases its GPU at once."""
    metadata = deployment["metadata"]
    key, namespace = f"{metadata['namespace']}/{metadata['name']}", metadata["namespace"]
    outcome = PodOutcome(after=[])
    for pod_name in writes.deletes:
        kube.delete_pod(namespace, pod_name)
        outcome.deleted.add(pod_name)
        log.info("replica removed", extra={"deployment": key, "pod": pod_name, "why": writes.why.get(pod_name, "")})
    for pod_name in writes.evictions:
        refusal = cache.evictions.evict(kube, namespace, pod_name, "deployment")
        if refusal is None:
            outcome.deleted.add(pod_name)
            log.info("replica evicted", extra={"deployment": key, "pod": pod_name, "why": writes.why.get(pod_name, "")})
        else:
            outcome.retry = True
            log.info("eviction refused", extra={"deployment": key, "pod": pod_name, "why": refusal})
    outcome.after = [pod for pod in pods_now if pod.name not in outcome.deleted]
    for claim in writes.claim_deletes:
        kube.delete_resource_claim(namespace, claim)
        log.info("resource claim removed", extra={"deployment": key, "claim": claim, "why": "its pod is gone"})
    for create, manifest in writes.creates:
        _create(kube, cache, deployment, create, manifest, outcome, writes.claims.get(manifest["metadata"]["name"]))
    return outcome


def _create(
    kube: Kube,
    cache: Cache,
    deployment: Mapping[str, Any],
    create: Create,
    manifest: dict[str, Any],
    outcome: PodOutcome,
    claim: Mapping[str, Any] | None = None,
) -> None:
    """The pod; with DRA its ResourceClaim first, so the scheduler never sees the pod without it
    (it would call the pod unschedulable, and placement would take that for a refusal)."""
    key = f"{deployment['metadata']['namespace']}/{deployment['metadata']['name']}"
    pod_name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    try:
        if claim is not None:
            kube.create_resource_claim(claim)
        fresh = kube.create_pod(manifest)
    except PodRefused as refusal:
        # Release the GPU now: a refusal holding a reservation would starve every other deployment.
        cache.forget(pod_name)
        if claim is not None:
            kube.delete_resource_claim(namespace, pod_name)
        outcome.refusals.append(f"replica {create.replica}: {refusal}")
        log.warning("replica pod refused", extra={"deployment": key, "replica": create.replica, "why": str(refusal)})
        return
    if fresh:
        kube.event(deployment, "ReplicaPlaced", f"replica {create.replica} on {create.node}, "
                   f"estimated load {create.load_seconds:.1f} s ({create.bottleneck} is the bottleneck)")  # fmt: skip
        log.info("replica placed", extra={"deployment": key, "replica": create.replica, "node": create.node,
                                          "load_s": round(create.load_seconds, 1), "bottleneck": create.bottleneck})  # fmt: skip
    outcome.created.add(pod_name)
    outcome.after.append(PodView(pod_name, create.replica, create.node))


def _report(kube: Kube, cache: Cache, deployment: Mapping[str, Any], new_status: Mapping[str, Any], refused: bool) -> bool:
    """The status, if it changed, and a warning Event when the Placed condition turns or stays False
    with a new message. True when the API server refused the status: it is written again with
    backoff, and the refusal is told once in a warning Event, not per retry."""
    metadata, current = deployment["metadata"], deployment.get("status") or {}
    placed = new_status["conditions"][0]
    before: Mapping[str, Any] = next((c for c in current.get("conditions") or [] if c.get("type") == "Placed"), {})
    if placed["status"] == "False" and placed["message"] != before.get("message"):
        kube.event(deployment, "PodRejected" if refused else "FailedPlacement", placed["message"], warning=True)
        log.warning("cannot place", extra={"deployment": f"{metadata['namespace']}/{metadata['name']}", "why": placed["message"]})
    metrics.RECONCILES.labels("placed" if placed["status"] == "True" else "unplaced").inc()
    if not _differs(current, new_status):
        return False
    try:
        kube.patch_status(metadata["namespace"], metadata["name"], new_status)
    except StatusRefused as refusal:
        key = f"{metadata['namespace']}/{metadata['name']}"
        if cache.first_report(f"status {key}", str(refusal)):
            kube.event(deployment, "StatusRefused", f"the API server refused the status: {refusal}"[:1024], warning=True)
            log.warning("status refused", extra={"deployment": key, "why": str(refusal)})
        return True
    return False


def _report_invalid(kube: Kube, deployment: Mapping[str, Any], message: str, now: datetime) -> None:
    metadata = deployment["metadata"]
    previous = (deployment.get("status") or {}).get("conditions") or []
    placed = status.condition(previous, "Placed", False, "InvalidSpec", message, int(metadata.get("generation", 0)), now)
    kube.patch_status(metadata["namespace"], metadata["name"], status.wire(InferenceDeploymentStatus(conditions=[placed])))
    metrics.RECONCILES.labels("invalid").inc()


def apply_disruption_budget(
    kube: Kube, cache: Cache, deployment: Mapping[str, Any], spec: InferenceDeploymentSpec, current: int | None
) -> None:
    """One PodDisruptionBudget per deployment with spec.disruption: evictions (ours in maintenance,
    kubectl drain's, the cluster autoscaler's) then never take it below minAvailable Ready replicas."""
    metadata = deployment["metadata"]
    key = f"{metadata['namespace']}/{metadata['name']}"
    wanted = spec.disruption.min_available if spec.disruption else None
    if not cache.budget_pending(key, wanted, current):
        return
    if wanted is None:
        kube.delete_pdb(metadata["namespace"], metadata["name"])
    else:
        kube.apply_pdb(pods.disruption_budget(deployment, wanted))
    cache.budget_written(key, wanted)


def apply_service(
    kube: Kube, cache: Cache, deployment: Mapping[str, Any], spec: InferenceDeploymentSpec, current: Mapping[str, Any] | None
) -> None:
    """The deployment's Service in step with spec.service; a name clash is reported once as a warning Event."""
    refusal = service.apply(kube, deployment, spec.service, current)
    if refusal is not None and cache.first_report(f"service {key_of(deployment)}", refusal):
        kube.event(deployment, "ServiceConflict", refusal, warning=True)
        log.warning("service not applied", extra={"deployment": key_of(deployment), "why": refusal})


def apply_power(
    kube: Kube,
    cache: Cache,
    deployment: Mapping[str, Any],
    spec: InferenceDeploymentSpec,
    nodes: Mapping[str, NodeFacts],
    pods_after: list[PodView],
) -> tuple[dict[str, tuple[str, int]], set[str]]:
    """Request this deployment's power limits on the nodes its replicas use; release the rest.

    Returns each pod's (GPU, watts), and the pods whose GPU their node's agent has not reported
    yet (the node reports assignments, so they get no limit by count in the meantime)."""
    metadata = deployment["metadata"]
    owner = f"{metadata['namespace']}/{metadata['name']}"
    limit = spec.power.limit_watts if spec.power else None
    fraction = spec.power.fraction_of_default if spec.power else None
    if spec.power is not None and POWER_FINALIZER not in (metadata.get("finalizers") or []):
        kube.add_finalizer(metadata["namespace"], metadata["name"], POWER_FINALIZER)
    live = [pod for pod in pods_after if not pod.terminating]
    by_node: dict[str, list[PodView]] = {}
    for pod in live:
        by_node.setdefault(pod.node, []).append(pod)
    previously = {p.get("node") for p in (deployment.get("status") or {}).get("placements") or [] if p.get("power")}
    result: dict[str, tuple[str, int]] = {}
    waiting: set[str] = set()
    for node_name in sorted(set(by_node) | {n for n in previously if n}):
        node = nodes.get(node_name)
        if node is None or not node.gpu_uuids:
            continue
        here = [pod.name for pod in sorted(by_node.get(node_name, []), key=lambda pod: pod.replica)]
        # A shared GPU (MIG slice, vGPU, time-slicing) is never capped: the cap would hit every tenant on it.
        whole = power.whole_gpus(node.mode, node.gpu_allocatable, len(node.gpu_uuids))
        shares: dict[str, int] = {}
        garbage: list[str] = []
        assigned: dict[str, tuple[str, ...]] | None = None

        def change(
            annotations: Mapping[str, str], facts: NodeFacts = node, here: list[str] = here, whole: bool = whole,
            shares: dict[str, int] = shares, garbage: list[str] = garbage,
        ) -> Mapping[str, str]:  # fmt: skip
            nonlocal assigned
            problems = (power.parse_owners(annotations.get(power.OWNERS_ANNOTATION))[1], power.request_problem(annotations))
            garbage[:] = [problem for problem in problems if problem]
            # Read with the owners, in one read-modify-write: which GPU each pod got, if the node says.
            assigned = power.assigned_gpus(annotations, metadata["namespace"], here, facts.gpu_uuids)
            exact = None if assigned is None else {uuid for gpus in assigned.values() for uuid in gpus} if whole else set()
            values, mine = power.desired_annotations(
                annotations, owner, len(here) if whole else 0, facts.gpu_uuids, facts.power_defaults, limit, fraction, exact
            )
            shares.clear()
            shares.update(mine)
            return values

        if limit is None and fraction is None and node_name not in previously:
            continue
        kube.update_node_annotations(node_name, change)
        for problem in garbage:
            _report_garbage(kube, cache, deployment, node_name, problem)
        result.update(power.pod_limits(here, shares, node.gpu_uuids, assigned))
        if assigned is not None and whole and (limit or fraction):
            waiting.update(pod for pod, gpus in assigned.items() if not gpus)
    return result, waiting


def _report_garbage(kube: Kube, cache: Cache, deployment: Mapping[str, Any], node: str, problem: str) -> None:
    """Once per node and value: the operator ignored (and rewrote) a power annotation it cannot read
    (the owners, or the request: rebuilt from the agent's status for the other owners' GPUs)."""
    if not cache.first_report(node, problem):
        return
    request = problem.startswith(f"annotation {keys.POWER_REQUEST_ANNOTATION}")
    reason = "PowerRequestRewritten" if request else "PowerOwnersIgnored"
    kube.event(deployment, reason, f"node {node}: {problem}; ignored and rewritten", warning=True)
    log.warning("power annotation ignored", extra={"node": node, "reason": reason, "why": problem})


def release_power(kube: Kube, deployment: Mapping[str, Any], nodes: Iterable[str]) -> None:
    """On deletion: drop this deployment's power requests so the agents restore the default limits."""
    metadata = deployment["metadata"]
    owner = f"{metadata['namespace']}/{metadata['name']}"
    for node_name in sorted(set(nodes)):

        def change(annotations: Mapping[str, str]) -> Mapping[str, str]:
            values, _ = power.desired_annotations(annotations, owner, 0, (), (), None, None)
            return values

        try:
            kube.update_node_annotations(node_name, change)
        except Exception as error:
            log.warning("could not release power limits", extra={"node": node_name, "error": str(error)})
    kube.remove_finalizer(metadata["namespace"], metadata["name"], POWER_FINALIZER, list(metadata.get("finalizers") or []))


def key_of(deployment: Mapping[str, Any]) -> str:
    return f"{deployment['metadata']['namespace']}/{deployment['metadata']['name']}"


def _differs(current: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return any(current.get(key) != value for key, value in new.items())
