"""The InferenceDeployment controller: gather, decide, apply.

``gather`` makes one typed ``View`` of a deployment from what the operator's indexes hold;
``place`` asks the pure planner under the cache's placement lock and assumes what it chose;
``decide``, ``decide_nodes`` and ``decide_report`` (all pure) return the intended writes as
``Writes``; ``applier.apply`` performs them. A reconcile goes in three rounds, because each
depends on what the API server made of the one before:

1. the pods (deletes, evictions, stale ResourceClaims, creates with their Events);
2. what hangs on the pods that now exist: the power finalizer, the power limits per node, the
   PodDisruptionBudget, the Service;
3. the report: the Events about the rounds above and the status (which names refused pods and
   the power limits the nodes took).

It is idempotent: run twice on the same state, the second run writes nothing (pod names are
stable, so an interrupted run that is repeated gets 409 and moves on).
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from egpu_api import keys
from egpu_api.inference import InferenceDeploymentSpec, InferenceDeploymentStatus
from egpu_api.power import PowerLimitStatus
from egpu_operator import pods, power, service, status
from egpu_operator.placement import Create, Demand, NodeFacts, Plan, PodView
from egpu_operator.power import PowerDecision, PowerWant

POWER_FINALIZER = keys.POWER_FINALIZER


@dataclass(frozen=True)
class Event:
    """An Event on the deployment. ``once``: (subject, problem) told once per process, not per retry."""

    reason: str
    message: str
    warning: bool = False
    once: tuple[str, str] | None = None


@dataclass(frozen=True)
class PodCreate:
    """A replica pod to create, with its DRA ResourceClaim (made first) and the Event told when it is new."""

    create: Create
    manifest: dict[str, Any]
    claim: dict[str, Any] | None
    event: Event


@dataclass(frozen=True)
class BudgetWrite:
    """The PodDisruptionBudget to write (``manifest``), or to delete (None)."""

    manifest: dict[str, Any] | None
    min_available: int | None


@dataclass(frozen=True)
class ServiceWrite:
    """The Service to create or correct (``manifest``), or to delete (None)."""

    manifest: dict[str, Any] | None
    exists: bool


@dataclass
class Writes:
    """Every write one round of a reconcile intends, decided before any is made; applied in field order."""

    key: str  # namespace/name of the deployment
    subject: Mapping[str, Any]  # what Events and patches are about: {"metadata": ...}
    deletes: list[str] = field(default_factory=list)  # replicas to delete (scale down, node gone, GPU lost)
    evictions: list[str] = field(default_factory=list)  # replicas whose replacement is Ready
    claim_deletes: list[str] = field(default_factory=list)  # ResourceClaims whose pod is gone
    creates: list[PodCreate] = field(default_factory=list)
    why: Mapping[str, str] = field(default_factory=dict)  # pod name -> why it is deleted or evicted
    finalizer: bool = False  # add the power finalizer
    power: list[PowerWant] = field(default_factory=list)
    budget: BudgetWrite | None = None
    service: ServiceWrite | None = None
    events: list[Event] = field(default_factory=list)
    status: dict[str, Any] | None = None  # the status merge patch; None: unchanged

    @property
    def claims(self) -> dict[str, dict[str, Any]]:
        """The ResourceClaim each new DRA pod uses, by pod name."""
        return {made.manifest["metadata"]["name"]: made.claim for made in self.creates if made.claim is not None}


@dataclass
class Outcome:
    """What the API server made of the writes so far (refusals are data, not exceptions)."""

    after: list[PodView]  # the replicas as they stand now
    created: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    refusals: list[str] = field(default_factory=list)  # the API server's reasons for replica pods it refused
    retry: bool = False  # an eviction was refused
    # node -> what this deployment wanted there, and what was written (merged with the node's annotations)
    power: dict[str, tuple[PowerWant, PowerDecision]] = field(default_factory=dict)
    service_refusal: str | None = None
    status_refusal: str | None = None


@dataclass(frozen=True)
class View:
    """One deployment as the operator sees it now, typed: what the decisions read, and nothing else."""

    key: str
    metadata: Mapping[str, Any]
    current: Mapping[str, Any]  # its status as it stands
    spec: InferenceDeploymentSpec
    demand: Demand
    pods: list[PodView]
    nodes: Mapping[str, NodeFacts]
    power_status: Mapping[str, Mapping[str, PowerLimitStatus]]
    budget_pending: bool  # its PodDisruptionBudget differs from the spec (and was not just written)
    service_now: Mapping[str, Any] | None  # its Service as the index shows it (``service.view``)
    stale_claims: list[str]
    device_class: str
    now: datetime

    @property
    def subject(self) -> dict[str, Any]:
        return {"metadata": self.metadata}


@dataclass(frozen=True)
class Invalid:
    """A deployment whose spec cannot be used (stored before a schema change): why, as one sentence."""

    key: str
    metadata: Mapping[str, Any]
    current: Mapping[str, Any]
    message: str


class Fleetlike(Protocol):
    """What ``gather`` reads of the fleet view (``reconcile.Fleet``)."""

    facts: dict[str, NodeFacts]
    power_status: dict[str, dict[str, PowerLimitStatus]]
    dra_device_class: str


def key_of(deployment: Mapping[str, Any]) -> str:
    return f"{deployment['metadata']['namespace']}/{deployment['metadata']['name']}"


def parse(deployment: Mapping[str, Any]) -> tuple[InferenceDeploymentSpec, Demand] | Invalid:
    """The typed spec and what one replica needs; the raw spec goes no further than this. Pure."""
    metadata, current = deployment["metadata"], deployment.get("status") or {}
    try:
        spec = InferenceDeploymentSpec.model_validate(deployment["spec"])
        return spec, Demand.of_spec(spec, metadata["name"])
    except ValidationError as error:
        # The API server validates specs; this guards against objects stored before a schema change.
        return Invalid(key_of(deployment), metadata, current, f"spec cannot be used: {_first_error(error)}")
    except ValueError as error:
        return Invalid(key_of(deployment), metadata, current, f"spec cannot be used: {error}".splitlines()[0])


def wanted_budget(spec: InferenceDeploymentSpec) -> int | None:
    """The minAvailable of the deployment's PodDisruptionBudget; None: it has none."""
    return spec.disruption.min_available if spec.disruption else None


def gather(
    deployment: Mapping[str, Any],
    parsed: tuple[InferenceDeploymentSpec, Demand],
    fleet: Fleetlike,
    replica_pods: Iterable[PodView],
    budget_pending: bool,
    service_now: Mapping[str, Any] | None,
    claims: Iterable[str],
    now: datetime,
) -> View:
    """One typed view of ``deployment`` from what the operator read (``fleet``: the node facts). Pure."""
    pods_now = list(replica_pods)
    return View(
        key_of(deployment), deployment["metadata"], deployment.get("status") or {}, parsed[0], parsed[1], pods_now,
        fleet.facts, fleet.power_status, budget_pending, service_now, stale_claims(claims, pods_now),
        fleet.dra_device_class, now,
    )  # fmt: skip


def _first_error(error: ValidationError) -> str:
    """The first error with the field it is about (its ``loc``), not pydantic's headline."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "spec"
    return f"spec.{where}: {first.get('msg', 'invalid')}"


def stale_claims(claims: Iterable[str], pods_now: Iterable[PodView]) -> list[str]:
    """The replicas' ResourceClaims whose pod is gone (claims are named as their pods): a claim kept
    would hold its device after the scheduler's allocation lapses. A terminating pod keeps its claim."""
    alive = {pod.name for pod in pods_now}
    return sorted(name for name in claims if name not in alive)


# -- round 1: the pods ---------------------------------------------------------------------------


def decide(view: View, result: Plan) -> Writes:
    """The plan as intended pod writes, with the manifests of the pods (and DRA claims) to create. Pure."""
    return pod_writes(view.metadata, view.spec, result, view.device_class, view.stale_claims)


def pod_writes(
    metadata: Mapping[str, Any],
    spec: InferenceDeploymentSpec,
    result: Plan,
    device_class: str = keys.DRA_GPU_DEVICE_CLASS,
    claim_deletes: Iterable[str] = (),
) -> Writes:
    """``decide`` for a deployment's metadata and typed spec. Pure."""
    creates = [_pod_create(metadata, spec, create, device_class) for create in result.creates]
    made = {entry.manifest["metadata"]["name"] for entry in creates if entry.claim is not None}
    # A claim about to be made again (the same pod name) is kept: deleting it would race its creation.
    stale = [name for name in claim_deletes if name not in made]
    key = f"{metadata['namespace']}/{metadata['name']}"
    return Writes(key, {"metadata": metadata}, list(result.deletes), list(result.evictions), stale, creates, dict(result.why))


def _pod_create(metadata: Mapping[str, Any], spec: InferenceDeploymentSpec, create: Create, device_class: str) -> PodCreate:
    manifest = pods.replica_pod_of(
        metadata, spec, create.replica, create.node, create.load_seconds, create.vram_mib, create.gpu_resource,
        dra=create.device is not None,
    )  # fmt: skip
    claim = None
    if create.device is not None:
        claim = pods.resource_claim({"metadata": metadata}, manifest, create.device.path, create.device.uuid, device_class)
    placed = Event(
        "ReplicaPlaced",
        f"replica {create.replica} on {create.node}, "
        f"estimated load {create.load_seconds:.1f} s ({create.bottleneck} is the bottleneck)",
    )
    return PodCreate(create, manifest, claim, placed)


# -- round 2: what hangs on the pods -------------------------------------------------------------


def decide_nodes(view: View, after: Sequence[PodView]) -> Writes:
    """The power finalizer and limits, the PodDisruptionBudget and the Service for the replicas ``after``
    the pod writes. Pure."""
    finalizer = view.spec.power is not None and POWER_FINALIZER not in (view.metadata.get("finalizers") or [])
    return Writes(
        view.key, view.subject, finalizer=finalizer, power=power_wants(view, after), budget=budget_write(view),
        service=service_write(view),
    )  # fmt: skip


def power_wants(view: View, after: Sequence[PodView]) -> list[PowerWant]:
    """Per node: this deployment's replicas there and its limit; nodes it had limits on and no
    longer uses get a want with no pods (its limits there are released)."""
    limit = view.spec.power.limit_watts if view.spec.power else None
    fraction = view.spec.power.fraction_of_default if view.spec.power else None
    by_node: dict[str, list[PodView]] = {}
    for pod in after:
        if not pod.terminating:
            by_node.setdefault(pod.node, []).append(pod)
    previously = {p.get("node") for p in view.current.get("placements") or [] if p.get("power") and p.get("node")}
    wants = []
    for node_name in sorted(set(by_node) | previously):
        node = view.nodes.get(node_name)
        if node is None or not node.gpu_uuids:
            continue
        if limit is None and fraction is None and node_name not in previously:
            continue
        here = tuple(pod.name for pod in sorted(by_node.get(node_name, []), key=lambda pod: pod.replica))
        # A shared GPU (MIG slice, vGPU, time-slicing) is never capped: the cap would hit every tenant on it.
        whole = power.whole_gpus(node.mode, node.gpu_allocatable, len(node.gpu_uuids))
        namespace = view.metadata["namespace"]
        wants.append(PowerWant(node_name, view.key, namespace, here, whole, node.gpu_uuids, node.power_defaults, limit, fraction))
    return wants


def budget_write(view: View) -> BudgetWrite | None:
    """One PodDisruptionBudget per deployment with spec.disruption: evictions (ours in maintenance,
    kubectl drain's, the cluster autoscaler's) then never take it below minAvailable Ready replicas."""
    if not view.budget_pending:
        return None
    wanted = view.spec.disruption.min_available if view.spec.disruption else None
    manifest = None if wanted is None else pods.disruption_budget(view.subject, wanted)
    return BudgetWrite(manifest, wanted)


def service_write(view: View) -> ServiceWrite | None:
    """The Service in step with spec.service; only a Service this deployment controls is deleted."""
    current = view.service_now
    if view.spec.service is None:
        if current is not None and current.get("controller") == view.metadata.get("uid"):
            return ServiceWrite(None, True)
        return None
    wanted = service.manifest(view.subject, view.spec.service)
    if service.in_step(wanted, current):
        return None
    return ServiceWrite(wanted, current is not None)


# -- round 3: the report -------------------------------------------------------------------------


def decide_report(view: View, result: Plan, outcome: Outcome) -> Writes:
    """The Events about what happened and the status, from the outcome of the rounds before. Pure."""
    events = [_garbage_event(node, problem) for node, (_, decided) in outcome.power.items() for problem in decided.problems]
    if outcome.service_refusal is not None:
        events.append(Event("ServiceConflict", outcome.service_refusal, True, (f"service {view.key}", outcome.service_refusal)))
    new_status = build_status(view, result, outcome)
    placed = new_status["conditions"][0]
    before: Mapping[str, Any] = next((c for c in view.current.get("conditions") or [] if c.get("type") == "Placed"), {})
    if placed["status"] == "False" and placed["message"] != before.get("message"):
        events.append(Event("PodRejected" if outcome.refusals else "FailedPlacement", placed["message"], True))
    return Writes(view.key, view.subject, events=events, status=new_status if differs(view.current, new_status) else None)


def build_status(view: View, result: Plan, outcome: Outcome) -> dict[str, Any]:
    """The status patch: placements with the power limits the nodes took, conditions, counts."""
    limits: dict[str, tuple[str, int]] = {}
    waiting: set[str] = set()
    for want, decided in outcome.power.values():
        limits.update(decided.pod_limits(want))
        waiting.update(decided.waiting(want))
    return status.build(
        view.metadata, view.current, view.spec, view.demand, result, outcome.after, view.nodes, limits, view.power_status,
        view.now, outcome.refusals, waiting,
    )  # fmt: skip


def _garbage_event(node: str, problem: str) -> Event:
    """Once per node and value: the operator ignored (and rewrote) a power annotation it cannot read
    (the owners, or the request: rebuilt from the agent's status for the other owners' GPUs)."""
    request = problem.startswith(f"annotation {keys.POWER_REQUEST_ANNOTATION}")
    reason = "PowerRequestRewritten" if request else "PowerOwnersIgnored"
    return Event(reason, f"node {node}: {problem}; ignored and rewritten", True, (node, problem))


def decide_status_refused(view: View | Invalid, outcome: Outcome) -> Writes:
    """A status the API server refused is told once in a warning Event, not per retry. Pure."""
    refusal = outcome.status_refusal
    if refusal is None:
        return Writes(view.key, {"metadata": view.metadata})
    message = f"the API server refused the status: {refusal}"[:1024]
    told = Event("StatusRefused", message, True, (f"status {view.key}", refusal))
    return Writes(view.key, {"metadata": view.metadata}, events=[told])


def decide_invalid(invalid: Invalid, now: datetime) -> Writes:
    """An unusable spec: Placed=False saying why, written when it is news (so it is reported once). Pure."""
    previous = invalid.current.get("conditions") or []
    generation = int(invalid.metadata.get("generation", 0))
    placed = status.condition(previous, "Placed", False, "InvalidSpec", invalid.message, generation, now)
    new_status = status.wire(InferenceDeploymentStatus(conditions=[placed]))
    changed = new_status if differs(invalid.current, new_status) else None
    return Writes(invalid.key, {"metadata": invalid.metadata}, status=changed)


def differs(current: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return any(current.get(key) != value for key, value in new.items())
