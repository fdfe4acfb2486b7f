"""Where each replica goes. Pure: plain data in, a plan out; no kopf, no Kubernetes client.

A node is adequate for a deployment when its node agent is alive and its labels parse, it
is schedulable and not in maintenance, its GPUs are healthy, it matches the nodeSelector,
its GPU mode is allowed, its worst GPU (or MIG slice) holds the model plus overhead, every
stage of a load (storage, host copy, PCIe links: ``egpu_api.loadpath``) moves the model within
the budget, and it has a free GPU. Among adequate nodes a replica goes where it loads
fastest, counting the loads already under way on shared stages, spreading replicas of one
deployment across nodes first. Replicas already on an adequate node stay put (placement is stable).

A replica whose node stops being adequate is moved: a replacement is surged first and the
old pod evicted once the new one is Ready (through the Eviction API, so a PodDisruptionBudget
still has its say). That holds for a dead agent too: the pod may well still serve. Only two
observations remove a pod at once: its node is gone, or a live agent reports its GPU lost.
A node the operator cannot judge (its agent's liveness unknown, its labels unreadable, a
not-ready or unreachable taint from the node lifecycle controller) keeps its replicas and
gets no new ones: what the operator cannot see is not dead.
"""

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from egpu_api import keys, loadpath
from egpu_api.inference import InferenceDeploymentSpec
from egpu_api.loadpath import LoadEstimate, Stage
from egpu_api.quantity import parse_bytes
from egpu_operator import fit, pods
from egpu_operator.liveness import Liveness

MIB = 1024 * 1024
# Taints the node lifecycle controller sets when it cannot hear a kubelet: blindness, not a verdict.
LIFECYCLE_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})


@dataclass(frozen=True)
class NodeFacts:
    """What placement needs of one node; the operator's node index holds exactly this."""

    name: str
    problem: str | None = None  # why the node cannot be judged at all (missing or malformed labels)
    vram_mib: int = 0
    bandwidth_mbps: int = 0  # effective rate of the worst GPU's slowest link, alone on it
    pcie_generation: int = 0
    pcie_width: int = 0
    # The other stages of a load, where the agent publishes them (None: not known).
    storage_mbps: int | None = None  # the node's model cache, read sequentially
    pageable_mbps: int | None = None  # measured host-to-device copies, per kind
    pinned_mbps: int | None = None
    shared_link_mbps: int | None = None  # the slowest link several GPUs sit below (a switch uplink)
    mode: str = ""
    health: str = ""
    gpu_allocatable: int = 0
    gpu_units: int = 0  # physical GPUs or MIG slices (the agent's count); fewer than allocatable: time-sliced
    unschedulable: bool = False
    maintenance: bool = False
    liveness: Liveness = Liveness.ALIVE  # of its node agent, as egpu_operator.liveness judged it
    labels: Mapping[str, str] = field(default_factory=dict)
    # NoSchedule/NoExecute taints as (key, value, effect): kube-scheduler refuses pods that do not tolerate them.
    taints: tuple[tuple[str, str, str], ...] = ()
    gpu_uuids: tuple[str, ...] = ()
    power_defaults: tuple[int, ...] = ()  # default limit in watts, per GPU, same order as gpu_uuids
    # status.allocatable as the scheduler counts it (``fit.units``): CPU in millicores, the rest whole.
    allocatable: Mapping[str, int] = field(default_factory=dict)
    # The resource this node's whole (or time-sliced) GPUs are advertised as, and its MIG "mixed"
    # slices: one resource per profile, each with its memory. ``gpu_allocatable`` counts the former.
    gpu_resource: str = keys.GPU_RESOURCE
    slices: tuple["Slice", ...] = ()
    # GPUs a DRA driver publishes for this node in ResourceSlices, allocated or not: ``requested``
    # holds the taken ones under ``Device.key``.
    devices: tuple["Device", ...] = ()


#: Prefix of a DRA device's key in ``requested``: a claim allocated (or a replica's claim reserving)
#: that device holds one of it, like one unit of a resource only that device offers.
DRA_HOLD: Final = "dra:"


@dataclass(frozen=True)
class Device:
    """One GPU published through Dynamic Resource Allocation (a device of ``gpu.nvidia.com``)."""

    driver: str
    pool: str
    name: str
    uuid: str
    vram_mib: int

    @property
    def path(self) -> str:
        """``<driver>/<pool>/<device>``: how a ResourceClaim's allocation names it."""
        return f"{self.driver}/{self.pool}/{self.name}"

    @property
    def key(self) -> str:
        return f"{DRA_HOLD}{self.path}"


@dataclass(frozen=True)
class Slice:
    """One MIG profile advertised as its own resource (``nvidia.com/mig-3g.40gb``) and how many."""

    resource: str
    vram_mib: int
    count: int


@dataclass(frozen=True)
class Demand:
    """What one replica needs, derived from an InferenceDeployment spec."""

    model_bytes: int
    vram_mib: int
    min_bandwidth_mbps: int
    allowed_modes: frozenset[str]
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    remote_mbps: int | None = None  # the weights come from a remote source at this rate; None: the node's cache
    host_copy: str = "pageable"  # or "pinned": which measured copy rate bounds the load
    # The replica pod as kube-scheduler will weigh it: its requests (``fit.pod_requests``), its spec
    # (template nodeSelector and node affinity), its DoNotSchedule spread constraints over replicas.
    requests: Mapping[str, int] = field(default_factory=dict)
    pod_spec: Mapping[str, Any] = field(default_factory=dict)
    spread: tuple[tuple[str, int], ...] = ()
    dra: bool = False  # the replica gets its GPU through a ResourceClaim (a DRA device), not a resource

    @classmethod
    def of(
        cls,
        model_bytes: int,
        overhead_bytes: int,
        allowed_modes: Iterable[str],
        max_load_seconds: int | None = None,
        min_bandwidth_mbps: int | None = None,
        node_selector: Mapping[str, str] | None = None,
        tolerations: Iterable[Mapping[str, Any]] = (),
        remote_mbps: int | None = None,
        host_copy: str = "pageable",
        pod_spec: Mapping[str, Any] | None = None,
        pod_labels: Mapping[str, str] | None = None,
        dra: bool = False,
    ) -> "Demand":
        """``pod_spec``: the replica pod's spec as ``pods.replica_spec`` makes it (its requests and
        constraints are checked as the scheduler will); None checks GPUs, VRAM and links only."""
        if (max_load_seconds is None) == (min_bandwidth_mbps is None):
            raise ValueError("set exactly one of max_load_seconds or min_bandwidth_mbps")
        need = min_bandwidth_mbps if min_bandwidth_mbps is not None else math.ceil(model_bytes / 1e6 / (max_load_seconds or 1))
        return cls(
            model_bytes=model_bytes,
            vram_mib=math.ceil((model_bytes + overhead_bytes) / MIB),
            min_bandwidth_mbps=need,
            allowed_modes=frozenset(allowed_modes),
            node_selector=dict(node_selector or {}),
            tolerations=tuple(tolerations),
            remote_mbps=remote_mbps,
            host_copy=host_copy,
            requests=fit.pod_requests(pod_spec) if pod_spec is not None else {},
            pod_spec=dict(pod_spec or {}),
            spread=tuple(fit.spread_constraints(pod_spec or {}, pod_labels or {})),
            dra=dra,
        )

    @classmethod
    def of_spec(cls, spec: InferenceDeploymentSpec, name: str = "") -> "Demand":
        """What one replica of InferenceDeployment ``name`` needs; ValueError names a bad quantity."""
        return cls.of(
            parse_bytes(spec.model.size),
            parse_bytes(spec.model.vram_overhead),
            spec.placement.allowed_modes,
            spec.placement.max_load_seconds,
            spec.placement.min_bandwidth_m_bps,
            spec.placement.node_selector,
            [*spec.placement.tolerations, *((spec.template.get("spec") or {}).get("tolerations") or [])],
            spec.model.source.read_m_bps if spec.model.source is not None else None,
            spec.model.host_copy.lower(),
            pods.replica_spec(spec.template, None),  # the GPU itself is counted by free slots, per node
            pods.replica_labels(spec.template, name),
            spec.placement.gpu_allocation == "DRA",
        )

    def stages(self, node: NodeFacts, concurrent: int = 0) -> list[Stage]:
        """The stages of a load onto ``node`` while ``concurrent`` other replicas load there."""
        remote = self.remote_mbps is not None
        return loadpath.stages(
            node.bandwidth_mbps,
            storage_mbps=self.remote_mbps if remote else node.storage_mbps,
            storage_name="remote source" if remote else "storage",
            copy_mbps=node.pinned_mbps if self.host_copy == "pinned" else node.pageable_mbps,
            copy_kind=self.host_copy,
            shared_link_mbps=node.shared_link_mbps,
            concurrent=concurrent,
        )

    def estimate(self, node: NodeFacts, concurrent: int = 0) -> LoadEstimate:
        if not node.bandwidth_mbps:
            return LoadEstimate(math.inf, None)
        return loadpath.estimate(self.model_bytes, self.stages(node, concurrent))

    def load_seconds(self, node: NodeFacts, concurrent: int = 0) -> float:
        return self.estimate(node, concurrent).seconds

    def oversubscribes(self, node: NodeFacts, concurrent: int) -> bool:
        """Whether one more load beside ``concurrent`` others leaves some stage below the budget's rate."""
        if concurrent == 0:
            return False
        return min(stage.share_mbps for stage in self.stages(node, concurrent)) < self.min_bandwidth_mbps

    def too_slow(self, node: NodeFacts) -> str | None:
        """The stage that cannot meet the budget with the node to itself, as a rejection; None: fast enough."""
        slowest = min(self.stages(node), key=lambda stage: stage.mbps)
        if slowest.mbps >= self.min_bandwidth_mbps:
            return None
        name = "link" if "link" in slowest.name else slowest.name
        return f"{name} too slow (need >= {self.min_bandwidth_mbps} MB/s)"


@dataclass(frozen=True)
class PodView:
    """One existing replica pod of the deployment being planned."""

    name: str
    replica: int
    node: str
    ready: bool = False
    terminating: bool = False
    # The scheduler refused it: a reason placement does not model, or its node filled up between
    # our decision and its binding. ``scheduler_message`` is the scheduler's own sentence.
    unschedulable: bool = False
    gated: bool = False  # held by schedulingGates: the scheduler does not look at it yet
    scheduler_message: str = ""


@dataclass(frozen=True)
class Create:
    replica: int
    node: str
    load_seconds: float
    bottleneck: str = ""  # the stage that bounds the load, e.g. "storage 90 MB/s"
    vram_mib: int | None = None
    gpu_resource: str = keys.GPU_RESOURCE  # what the replica pod asks for: a GPU, a shared GPU or a MIG slice
    device: Device | None = None  # or, with DRA, the device its ResourceClaim selects

    @property
    def holds(self) -> dict[str, int]:
        """What the replica takes on its node besides the template's requests: its GPU resource or device."""
        return {self.device.key if self.device is not None else self.gpu_resource: 1}


@dataclass
class Plan:
    creates: list[Create] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    # Pods replaced by a Ready pod elsewhere: evicted through the Eviction API, so PodDisruptionBudgets hold.
    evictions: list[str] = field(default_factory=list)
    why: dict[str, str] = field(default_factory=dict)  # pod name -> why it is deleted or evicted, for logs
    rejections: Counter[str] = field(default_factory=Counter)
    adequate: int = 0
    considered: int = 0
    unplaced: int = 0  # replicas with neither a pod on an adequate node nor a place to go
    stranded: int = 0  # replicas still serving on a node no longer adequate, with nowhere better to go
    # Replicas held back because every adequate node's shared stages are busy with other loads: one
    # more load would push them all past the budget. They start when a load there finishes.
    waiting: int = 0
    # Replicas whose pod kube-scheduler refused, with nowhere else to go: "replica 0: <its message>".
    unschedulable: list[str] = field(default_factory=list)
    gated: int = 0  # replicas whose pod the template's schedulingGates hold

    @property
    def summary(self) -> str:
        """Scheduler-style: '0/8 nodes adequate: 3 link too slow (need >= 300 MB/s), 2 VRAM < 20 GiB'."""
        parts = ", ".join(f"{count} {reason}" for reason, count in sorted(self.rejections.items(), key=lambda r: (-r[1], r[0])))
        waiting = f"; {self.waiting} replica(s) wait for loads on shared stages to finish" if self.waiting else ""
        return f"{self.adequate}/{self.considered} nodes adequate" + (f": {parts}" if parts else "") + waiting


def rejection(node: NodeFacts, demand: Demand) -> str | None:
    """Why ``node`` cannot take a new replica (ignoring free GPUs), or None if it can."""
    if node.problem is not None:
        return node.problem
    if node.liveness is Liveness.DEAD:
        return "node agent heartbeat missing or stale"
    if node.liveness is Liveness.UNKNOWN:
        return "node agent not yet confirmed alive"
    if node.unschedulable or node.maintenance:
        return "cordoned or in maintenance"
    if node.health != "ok":
        return f"GPU {node.health}"
    for taint in node.taints:
        if not any(tolerates(toleration, taint) for toleration in demand.tolerations):
            return f"untolerated taint {taint[0]}"
    if any(node.labels.get(key) != value for key, value in demand.node_selector.items()):
        return "nodeSelector mismatch"
    affinity = fit.node_affinity_refusal(demand.pod_spec, node.name, node.labels)
    if affinity is not None:
        return affinity
    if node.mode not in demand.allowed_modes:
        return f"{node.mode} not allowed"
    if demand.dra:
        if not node.devices:
            return "no DRA GPU devices"
        if not any(device.vram_mib >= demand.vram_mib for device in node.devices):
            return f"VRAM < {_gib(demand.vram_mib)}"
    elif node.devices and not node.gpu_allocatable and not node.slices:
        return "GPUs only through DRA (gpuAllocation: DRA)"
    elif node.vram_mib < demand.vram_mib and not any(s.vram_mib >= demand.vram_mib for s in node.slices):
        return f"VRAM < {_gib(demand.vram_mib)}"
    return demand.too_slow(node)


def tolerates(toleration: Mapping[str, Any], taint: tuple[str, str, str]) -> bool:
    """Kubernetes' rule: key (empty key with Exists matches all), operator Exists or Equal value, effect."""
    key, value, effect = taint
    if toleration.get("effect") and toleration["effect"] != effect:
        return False
    if toleration.get("operator", "Equal") == "Exists":
        return not toleration.get("key") or toleration["key"] == key
    return toleration.get("key") == key and (toleration.get("value") or "") == value


def holds(node: NodeFacts, demand: Demand) -> bool:
    """Whether a replica already on ``node`` stays: the node is adequate, or the operator merely
    cannot tell (liveness unknown, labels unreadable on a node not cordoned, a node lifecycle taint)."""
    if node.liveness is Liveness.DEAD:
        return False
    if node.problem is not None:
        return not (node.unschedulable or node.maintenance)  # a cordon is readable whatever the labels say
    seen = replace(node, liveness=Liveness.ALIVE, taints=tuple(t for t in node.taints if t[0] not in LIFECYCLE_TAINTS))
    return rejection(seen, demand) is None


def removal_now(node: NodeFacts | None, node_name: str) -> str | None:
    """Why a replica on this node is deleted at once, without a replacement first; None: it is not.

    Only for observations that prove the pod cannot serve: the Node object is gone, or the
    node's agent, alive, reports its GPU lost. A dead agent proves nothing about the pod."""
    if node is None:
        return f"node {node_name} is gone"
    if node.problem is None and node.liveness is Liveness.ALIVE and node.health == "lost":
        return f"GPU of {node_name} lost, as its live node agent reports"
    return None


def plan(
    demand: Demand,
    replicas: int,
    nodes: Sequence[NodeFacts],
    free_gpus: Mapping[str, int],
    pods: Sequence[PodView],
    loading: Mapping[str, int] | None = None,
    vram_used: Mapping[str, int] | None = None,
    requested: Mapping[str, Mapping[str, int]] | None = None,
    refused: Mapping[str, str] | None = None,
    refused_lately: int = 0,
) -> Plan:
    """Creates and deletes that move the deployment toward ``replicas`` well-placed pods.

    ``loading``: replica pods (of any deployment) still loading their model, per node. Loads
    divide a node's storage and shared links, so a new one is ranked and sized with them.
    ``vram_used``: MiB the GPU pods on each node hold, for nodes whose GPUs are time-sliced.
    ``requested``: what the pods bound to each node request (``fit``); None: whole-pod fit unchecked.
    ``refused``: nodes where kube-scheduler refused this deployment's replicas lately, with its
    words; they get no new replica until that lapses (``Cache.scheduler_refusals``). A replica
    the scheduler refuses moves to another adequate node while fewer than ``MAX_REFUSED_NODES``
    nodes refused it lately (``refused_lately``, ten minutes); after that, or with nowhere to go,
    its pod stays pending (the scheduler
    binds it when the node frees up) and the plan says why: never a create-and-delete loop."""
    state = _planning(demand, replicas, nodes, free_gpus, pods, loading, vram_used, requested, refused or {}, refused_lately)
    slots: dict[int, list[PodView]] = {}
    for pod in pods:
        if not pod.terminating:
            slots.setdefault(pod.replica, []).append(pod)
    _scale_down(state.result, slots, replicas)
    for replica in range(replicas):
        _place_replica(state, replica, slots.get(replica, []))
    return state.result


@dataclass
class _Planning:
    """What one ``plan`` call carries from replica to replica: the plan so far, and what it has given out."""

    demand: Demand
    result: Plan
    by_name: dict[str, NodeFacts]
    adequate: dict[str, NodeFacts]
    free: dict[str, int]
    loads: Counter[str]
    per_node: Counter[str]
    spread: "_Spread"
    requested: Mapping[str, Mapping[str, int]] | None
    may_move: bool  # a replica the scheduler refused may try another node
    taken: Counter[tuple[str, str]] = field(default_factory=Counter)  # (node, MIG slice or DRA device key) given out


def _planning(
    demand: Demand,
    replicas: int,
    nodes: Sequence[NodeFacts],
    free_gpus: Mapping[str, int],
    pods: Sequence[PodView],
    loading: Mapping[str, int] | None,
    vram_used: Mapping[str, int] | None,
    requested: Mapping[str, Mapping[str, int]] | None,
    refused: Mapping[str, str],
    refused_lately: int,
) -> _Planning:
    result = Plan(considered=len(nodes))
    adequate, free = _adequate(nodes, demand, free_gpus, result, vram_used or {}, requested, refused)
    per_node = Counter(pod.node for pod in pods if not pod.terminating and pod.replica < replicas)
    return _Planning(
        demand, result, {node.name: node for node in nodes}, adequate, free, Counter(loading or {}), per_node,
        _Spread(demand, nodes, per_node), requested, max(refused_lately, len(refused)) < MAX_REFUSED_NODES,
    )  # fmt: skip


def _scale_down(result: Plan, slots: Mapping[int, list[PodView]], replicas: int) -> None:
    """Every pod of a slot at or above the desired count goes, highest slot first."""
    for replica in sorted((r for r in slots if r >= replicas), reverse=True):
        result.deletes += [pod.name for pod in slots[replica]]
        result.why |= {pod.name: "scale down" for pod in slots[replica]}


def _place_replica(state: _Planning, replica: int, current: list[PodView]) -> None:
    """One replica slot: held by its gates, settled (surplus evicted once the keeper is Ready), or placed anew."""
    result, demand, by_name = state.result, state.demand, state.by_name
    if any(pod.gated for pod in current):
        result.gated += 1  # the template's schedulingGates hold it; whoever set them lifts them
        return
    pending = [pod for pod in current if pod.unschedulable]
    current = [pod for pod in current if not pod.unschedulable]
    good = [pod for pod in current if pod.node in state.adequate or (pod.node in by_name and holds(by_name[pod.node], demand))]
    if good:
        # Settled, or a surge finished: keep one pod, drop the rest once it is Ready. An adequate
        # node beats one that merely holds its pod (a surge away from it is under way).
        keeper = max(good, key=lambda pod: (pod.node in state.adequate, pod.ready, -demand.load_seconds(by_name[pod.node])))
        _drop(result, state.per_node, pending, f"refused by the scheduler; {keeper.name} serves")
        if keeper.ready:
            extra = [pod.name for pod in current if pod is not keeper]
            result.evictions += extra
            result.why |= dict.fromkeys(extra, f"replaced by {keeper.name}")
        return
    for pod in current:
        why = removal_now(by_name.get(pod.node), pod.node)
        if why is not None:
            _drop(result, state.per_node, [pod], why)
    _move(state, replica, current, pending)


def _move(state: _Planning, replica: int, current: list[PodView], pending: list[PodView]) -> None:
    """A replica with no good pod: a new one on the best adequate node, or why there is none."""
    result = state.result
    target = None
    if state.may_move or not pending:
        target = _best(state.adequate, state.free, state.per_node, state.demand, state.loads, state.spread)
    if pending and (target is None or target is WAIT):
        # Nowhere else to go: the pod stays pending where it is, and the scheduler's words say why.
        result.unschedulable.append(f"replica {replica}: {pending[0].scheduler_message or 'unschedulable'}")
        return
    _drop(result, state.per_node, pending, "refused by the scheduler")
    if target is WAIT:
        result.waiting += 1
    elif target is None:
        if any(pod.name not in result.deletes for pod in current):
            result.stranded += 1
        else:
            result.unplaced += 1
    else:
        _create(state, replica, target)


def _create(state: _Planning, replica: int, target: NodeFacts) -> None:
    """A new replica on ``target``, taken from what this plan still has to give out there."""
    demand = state.demand
    state.free[target.name] -= 1
    state.per_node[target.name] += 1
    state.spread.add(target)
    load = demand.estimate(target, state.loads[target.name])
    state.loads[target.name] += 1
    used = (state.requested or {}).get(target.name) or {}
    device = _device(target, demand, used, state.taken) if demand.dra else None
    resource = "" if demand.dra else _gpu_resource(target, demand, used, state.taken)
    state.result.creates.append(
        Create(replica, target.name, load.seconds, str(load.bottleneck or ""), demand.vram_mib, resource, device)
    )


#: Nodes that refused one deployment's replicas, within their backoff, past which a refused replica
#: stays pending instead of trying yet another node: a refusal placement cannot see (a missing
#: PersistentVolumeClaim, pod anti-affinity) would otherwise walk the whole fleet.
MAX_REFUSED_NODES = 3


def _drop(result: Plan, per_node: Counter[str], pods: Iterable[PodView], why: str) -> None:
    for pod in pods:
        result.deletes.append(pod.name)
        result.why[pod.name] = why
        per_node[pod.node] -= 1


class _Spread:
    """The template's DoNotSchedule topology spread over this deployment's replicas.

    Domains are counted over the nodes the template's own constraints allow: the replica pod's
    pin to one node is node affinity too, and kube-scheduler (nodeAffinityPolicy Honor) would
    then see a single domain and never refuse, so placement is what keeps the spread."""

    def __init__(self, demand: Demand, nodes: Sequence[NodeFacts], per_node: Mapping[str, int]) -> None:
        self._constraints = demand.spread
        self._domains: dict[str, dict[str, int]] = {}
        for key, _ in self._constraints:
            counts = self._domains.setdefault(key, {})
            for node in nodes:
                value = node.labels.get(key)
                if value is not None and fit.node_affinity_refusal(demand.pod_spec, node.name, node.labels) is None:
                    counts[value] = counts.get(value, 0) + max(0, per_node.get(node.name, 0))

    def refusal(self, node: NodeFacts) -> str | None:
        return fit.spread_refusal(self._constraints, node.labels, self._domains) if self._constraints else None

    def add(self, node: NodeFacts) -> None:
        for key, _ in self._constraints:
            value = node.labels.get(key)
            if value is not None:
                self._domains[key][value] = self._domains[key].get(value, 0) + 1


def _adequate(
    nodes: Sequence[NodeFacts],
    demand: Demand,
    free_gpus: Mapping[str, int],
    result: Plan,
    vram_used: Mapping[str, int],
    requested: Mapping[str, Mapping[str, int]] | None,
    refused: Mapping[str, str],
) -> tuple[dict[str, NodeFacts], dict[str, int]]:
    """The nodes that can take a replica and how many more each takes; each rejection counted in ``result``."""
    adequate: dict[str, NodeFacts] = {}
    for node in nodes:
        reason = rejection(node, demand) or ("refused by kube-scheduler" if node.name in refused else None)
        if reason is None:
            adequate[node.name] = node
        else:
            result.rejections[reason] += 1
    free: dict[str, int] = {}
    short: dict[str, list[tuple[int, int]]] = {}  # resource -> (needed, free) per node it is short on
    for name, node in adequate.items():
        free[name] = _free_slots(node, free_gpus.get(name, 0), demand, vram_used.get(name, 0), (requested or {}).get(name) or {})
        if requested is None or free[name] <= 0:
            continue
        fits, lacking = _fitting(node, demand, requested.get(name) or {})
        free[name] = min(free[name], fits)
        # Short of the one GPU the replica asks for is "no free GPU" below; more than one is named.
        if fits <= 0 and any(resource not in GPU_RESOURCES or need > 1 for resource, (need, _) in lacking.items()):
            resource = min(lacking)
            short.setdefault(resource, []).append(lacking[resource])
            free[name] = -1  # counted under its resource, not as "no free GPU"
    for resource, cases in short.items():
        need, most = max(need for need, _ in cases), max(room for _, room in cases)
        if len(cases) == 1:
            result.rejections[f"{resource}: needs {fit.show(resource, need)}, {fit.show(resource, most)} free"] += 1
        else:
            result.rejections[f"{resource}: needs {fit.show(resource, need)}, at most {fit.show(resource, most)} free"] += len(
                cases
            )
    no_free = [name for name, count in free.items() if count == 0]
    result.adequate = sum(1 for count in free.values() if count > 0)
    if no_free:
        result.rejections["no free GPU"] += len(no_free)
    return adequate, free


#: The resources placement counts as GPUs itself (free slots, time-slicing, VRAM per slot).
GPU_RESOURCES = frozenset({keys.GPU_RESOURCE})


def _fitting(node: NodeFacts, demand: Demand, used: Mapping[str, int]) -> tuple[int, dict[str, tuple[int, int]]]:
    """How many replicas fit the node's allocatable beside what is bound there, and, when none,
    what it lacks: resource -> (needed, free)."""
    count: int | None = None
    lacking: dict[str, tuple[int, int]] = {}
    for resource, need in demand.requests.items():
        if need <= 0:
            continue
        room = node.allocatable.get(resource, 0) - used.get(resource, 0)
        fits = max(0, room) // need
        count = fits if count is None else min(count, fits)
        if room < need:
            lacking[resource] = (need, max(0, room))
    return (count if count is not None else _UNBOUNDED), lacking


_UNBOUNDED: Final = 2**31


#: What ``_best`` answers when adequate nodes have free GPUs but only busy shared stages.
WAIT: Final = NodeFacts(name="")


def _best(
    adequate: Mapping[str, NodeFacts],
    free: Mapping[str, int],
    per_node: Mapping[str, int],
    demand: Demand,
    loads: Mapping[str, int],
    spread: _Spread,
) -> NodeFacts | None:
    candidates = [node for name, node in adequate.items() if free[name] > 0 and spread.refusal(node) is None]
    if not candidates:
        return None
    # Stagger: a node whose shared stages are busy takes another load only while each load still
    # gets the rate the budget needs; otherwise the replica waits (the first load always starts).
    unhurried = [node for node in candidates if not demand.oversubscribes(node, loads.get(node.name, 0))]
    if not unhurried:
        return WAIT
    candidates = unhurried
    # Spread first (fewest replicas of this deployment), then fastest load with the loads already
    # under way there (a busy switch uplink loses to an idle one), then name for a stable order.
    return min(
        candidates, key=lambda node: (per_node.get(node.name, 0), demand.load_seconds(node, loads.get(node.name, 0)), node.name)
    )


def _free_slots(node: NodeFacts, free_gpus: int, demand: Demand, vram_used_mib: int, used: Mapping[str, int]) -> int:
    """Replicas of ``demand`` the node can still take. Time-slicing advertises one GPU as several,
    and the device plugin may hand every slot of one physical GPU out before another's, so on a
    time-sliced node all its GPU pods are counted against one GPU's memory: 4 slots of a 24 GB GPU
    take one 20 GB replica, not four. MIG "mixed" slices that hold the model count one each, and
    so do DRA devices, for a replica that asks through a ResourceClaim."""
    if demand.dra:
        return sum(1 for device in node.devices if device.vram_mib >= demand.vram_mib and not used.get(device.key))
    slices = sum(max(0, s.count - used.get(s.resource, 0)) for s in node.slices if s.vram_mib >= demand.vram_mib)
    if node.slices and node.vram_mib < demand.vram_mib:
        return slices  # the node's worst GPU or slice is too small for a whole-GPU replica
    if node.gpu_units <= 0 or node.gpu_allocatable <= node.gpu_units:
        return free_gpus + slices
    return min(free_gpus, max(0, (node.vram_mib - vram_used_mib) // max(1, demand.vram_mib))) + slices


def _gpu_resource(node: NodeFacts, demand: Demand, used: Mapping[str, int], taken: Counter[tuple[str, str]]) -> str:
    """What the replica on ``node`` asks for: the smallest MIG slice that holds the model and is free
    (``taken``: slices this plan already gave out), else the node's whole-GPU resource."""
    fitting = sorted((s for s in node.slices if s.vram_mib >= demand.vram_mib), key=lambda s: (s.vram_mib, s.resource))
    for candidate in fitting:
        if candidate.count - used.get(candidate.resource, 0) - taken[(node.name, candidate.resource)] > 0:
            taken[(node.name, candidate.resource)] += 1
            return candidate.resource
    return node.gpu_resource


def _device(node: NodeFacts, demand: Demand, used: Mapping[str, int], taken: Counter[tuple[str, str]]) -> Device | None:
    """The DRA device the replica's claim selects: the smallest free one that holds the model."""
    fitting = sorted((d for d in node.devices if d.vram_mib >= demand.vram_mib), key=lambda d: (d.vram_mib, d.name))
    for device in fitting:
        if not used.get(device.key) and not taken[(node.name, device.key)]:
            taken[(node.name, device.key)] += 1
            return device
    return None


def _gib(mib: int) -> str:
    return f"{mib / 1024:.0f} GiB" if mib % 1024 == 0 else f"{mib / 1024:.1f} GiB"
