"""What the controllers share between reconciles: one object, with assume/forget as kueue's scheduler cache.

The indexes and the node watch say what the API server held a moment ago; this cache holds
what the operator did since, until those views catch up:

- **node facts**, reused while a node's slim copy (compared by content) and its agent's
  liveness are unchanged, so a reconcile of one deployment costs O(changed nodes);
- **GPU reservations**: a GPU chosen for a new pod is *assumed* taken until the pod shows in
  the GPU-usage index, and *forgotten* at once when the API server refuses the pod (a refusal
  holding a reservation would starve every other deployment);
- **expectations**, as the ReplicaSet controller keeps them: after creating or deleting pods
  for a deployment, do not plan it again until the pod index shows those changes;
- the **heartbeats and visibility** agents are judged by (``liveness``), the deployments that
  cannot be placed, budgets written but not yet indexed, and the refused evictions' backoff
  (``evictions``, one ``kube.Evictor`` both controllers evict through).

Every method is safe from any thread. Times are monotonic seconds from ``clock``.
"""

import copy
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from egpu_api import keys
from egpu_api.power import PowerLimitStatus, parse_status
from egpu_operator import fit, metrics
from egpu_operator.facts import node_facts
from egpu_operator.kube import Evictor
from egpu_operator.liveness import Heartbeats, Liveness, LivenessConfig, Visibility
from egpu_operator.placement import DRA_HOLD, NodeFacts, PodView

#: A reservation nobody confirmed (the pod never showed in the index) lapses after this long.
RESERVATION_S = 60.0
#: Expectations nobody met (a lost watch event) lapse after this long.
EXPECTATION_S = 15.0
#: A node that refused a deployment's replica is left alone this long, doubling per refused pod.
REFUSAL_BASE_S = 30.0
REFUSAL_MAX_S = 600.0


class _Refusal:
    __slots__ = ("backoff_s", "message", "pods", "until")

    def __init__(self) -> None:
        self.backoff_s = 0.0
        self.message = ""
        self.pods: set[str] = set()
        self.until = 0.0


class _Node:
    """One node's facts, and the content they were computed from."""

    __slots__ = ("content", "facts", "liveness", "power", "seen")

    def __init__(self, node: Mapping[str, Any], liveness: Liveness, shared: tuple[str, ...]) -> None:
        self.seen = node  # the very object last seen: the common case, compared by identity first
        self.content = copy.deepcopy(node)  # what the facts were computed from, kept apart from the caller
        self.liveness = liveness
        self.facts = node_facts(node, liveness, shared)
        self.power = _power_status(node)

    def current(self, node: Mapping[str, Any], liveness: Liveness) -> bool:
        if liveness is not self.liveness:
            return False
        if node is self.seen:
            return True
        if node == self.content:  # an equal copy (a relist): the same node
            self.seen = node
            return True
        return False


class Cache:
    def __init__(
        self,
        liveness: LivenessConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        shared_gpu_resources: tuple[str, ...] = keys.SHARED_GPU_RESOURCES,
    ) -> None:
        """``shared_gpu_resources``: the names time-sliced or MPS GPUs may be advertised under."""
        self._clock = clock
        self._shared = shared_gpu_resources
        self._lock = threading.Lock()
        #: Placement decisions of all deployments are made one at a time, and with the reservations
        #: below: two deployments could otherwise both pick the last free GPU of a node in the
        #: instant before either pod is seen.
        self.placing = threading.Lock()
        self.heartbeats = Heartbeats(liveness or LivenessConfig())
        self.visibility = Visibility(liveness or LivenessConfig(), clock())
        self._nodes: dict[str, _Node] = {}
        self._reserved: dict[str, tuple[str, float, Mapping[str, int]]] = {}  # pod name -> (node, since, requests)
        self._refusals: dict[tuple[str, str], _Refusal] = {}  # (deployment, node) -> the scheduler's last refusal there
        self._expected: dict[str, tuple[set[str], set[str], float]] = {}  # deployment -> (creates, deletes, since)
        self._infeasible: set[str] = set()  # namespace/name of deployments with replicas that cannot be placed
        self._budgets: dict[str, int | None] = {}  # namespace/name -> minAvailable written, until the index shows it
        self._garbage_reported: set[tuple[str, str]] = set()  # (node, problem) already told in an Event
        self.evictions = Evictor(clock)
        self._filed: set[str] = set()  # automatic maintenances this process created or found existing

    # -- node facts --------------------------------------------------------------------------------

    def node_facts(
        self, nodes: Mapping[str, Mapping[str, Any]], liveness: Callable[[str], Liveness]
    ) -> tuple[dict[str, NodeFacts], dict[str, dict[str, PowerLimitStatus]]]:
        """Facts and reported power limits of every node, computed again only for nodes whose
        content or liveness changed; nodes gone from ``nodes`` are dropped.

        Keyed by content: the node watch replaces a node's dict on any change and never changes one
        in place, so the very same object is the same content (checked first, as it is cheap); a
        different object is compared with the copy the facts were computed from."""
        with self._lock:
            for name, node in nodes.items():
                state = liveness(name)
                cached = self._nodes.get(name)
                if cached is None or not cached.current(node, state):
                    self._nodes[name] = _Node(node, state, self._shared)
            for gone in set(self._nodes) - set(nodes):
                del self._nodes[gone]
            return (
                {name: entry.facts for name, entry in self._nodes.items()},
                {name: entry.power for name, entry in self._nodes.items()},
            )

    # -- reservations ------------------------------------------------------------------------------

    def assume(self, pod: str, node: str, requests: Mapping[str, int] | None = None) -> None:
        """A pod about to be created takes one GPU of ``node`` (and its ``requests``) until the usage index counts it."""
        with self._lock:
            self._reserved[pod] = (node, self._clock(), dict(requests or {}))

    def forget(self, pod: str) -> None:
        """The pod was refused: its GPU is free again now."""
        with self._lock:
            self._reserved.pop(pod, None)

    def free_gpus(self, free: Mapping[str, int], indexed_pods: set[str]) -> dict[str, int]:
        """``free`` less the reservations; a reservation whose pod the index counts is dropped."""
        now = self._clock()
        result = dict(free)
        with self._lock:
            for pod, (node, since, requests) in list(self._reserved.items()):
                if pod in indexed_pods or now - since > RESERVATION_S:
                    del self._reserved[pod]
                elif node in result and not any(name.startswith((keys.MIG_RESOURCE_PREFIX, DRA_HOLD)) for name in requests):
                    result[node] -= 1  # a MIG slice or DRA device is not one of the node's whole GPUs: ``requested`` counts it
        return result

    def reserved(self) -> dict[str, str]:
        """pod -> node of the reservations held now."""
        with self._lock:
            return {pod: node for pod, (node, _, _) in self._reserved.items()}

    def requested(self, bound: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
        """What each node's bound pods request (``bound``, from the usage index) plus the
        reservations held now: the pods the operator created that the index has not counted yet."""
        with self._lock:
            held = [(node, requests) for node, _, requests in self._reserved.values()]
        result = {node: dict(requests) for node, requests in bound.items()}
        for node, requests in held:
            result[node] = fit.take(result.get(node, {}), requests)
        return result

    # -- the scheduler's refusals ------------------------------------------------------------------

    def scheduler_refusals(self, deployment: str, pods_now: Iterable[PodView]) -> tuple[dict[str, str], int]:
        """Record the refusals the scheduler has written on ``deployment``'s pods; return node -> the
        scheduler's message for the nodes still refused. A node is refused while a pod there is
        refused, and for a backoff after (doubling with each refused pod there, 30 s to 10 min):
        the replica is tried elsewhere meanwhile, and a refusal placement cannot model costs a few
        pods, not a create-and-delete loop. The count: nodes that refused it in the last ten minutes
        (``placement.MAX_REFUSED_NODES`` of them and a refused replica stays pending)."""
        now = self._clock()
        with self._lock:
            for pod in pods_now:
                if not pod.unschedulable or pod.terminating:
                    continue
                self._reserved.pop(pod.name, None)  # refused: it holds nothing on the node, as the usage index agrees
                entry = self._refusals.setdefault((deployment, pod.node), _Refusal())
                if pod.name not in entry.pods:
                    entry.pods.add(pod.name)
                    entry.backoff_s = min(REFUSAL_MAX_S, entry.backoff_s * 2 if entry.backoff_s else REFUSAL_BASE_S)
                entry.message, entry.until = pod.scheduler_message, now + entry.backoff_s
            refused, lately = {}, 0
            for (owner, node), entry in list(self._refusals.items()):
                if now - entry.until > REFUSAL_MAX_S:
                    del self._refusals[(owner, node)]  # long settled: the next refusal starts from the base again
                elif owner == deployment:
                    lately += 1
                    if now < entry.until:
                        refused[node] = entry.message
            return refused, lately

    # -- expectations ------------------------------------------------------------------------------

    def expect(self, deployment: str, creates: set[str], deletes: set[str]) -> None:
        with self._lock:
            self._expected[deployment] = (set(creates), set(deletes), self._clock())

    def caught_up(self, deployment: str, pods_now: Iterable[PodView]) -> bool:
        """Whether the pod index shows the creates and deletes expected of ``deployment``."""
        with self._lock:
            expected = self._expected.get(deployment)
            if expected is None:
                return True
            creates, deletes, since = expected
            pods = list(pods_now)
            live = {pod.name for pod in pods if not pod.terminating}
            seen = {pod.name for pod in pods}
            if (creates <= seen and not (deletes & live)) or self._clock() - since > EXPECTATION_S:
                del self._expected[deployment]
                return True
            return False

    # -- infeasible deployments --------------------------------------------------------------------

    def infeasible(self, deployment: str, unplaceable: bool) -> None:
        """Record whether ``deployment`` has replicas that cannot be placed (or is gone: False)."""
        with self._lock:
            if unplaceable:
                self._infeasible.add(deployment)
            else:
                self._infeasible.discard(deployment)
            metrics.INFEASIBLE.set(len(self._infeasible))

    # -- disruption budgets ------------------------------------------------------------------------

    def budget_pending(self, deployment: str, wanted: int | None, indexed: int | None) -> bool:
        """Whether a budget write is still needed: not when the index shows ``wanted``, nor when it was
        written already and the index has not caught up yet."""
        with self._lock:
            if wanted == indexed:
                self._budgets.pop(deployment, None)
                return False
            return not (deployment in self._budgets and self._budgets[deployment] == wanted)

    def budget_written(self, deployment: str, wanted: int | None) -> None:
        with self._lock:
            self._budgets[deployment] = wanted

    # -- once-only reports -------------------------------------------------------------------------

    def first_report(self, node: str, problem: str) -> bool:
        """True the first time a garbage power-owners value is seen on ``node``."""
        with self._lock:
            if (node, problem) in self._garbage_reported:
                return False
            self._garbage_reported.add((node, problem))
            return True

    def first_filing(self, maintenance: str) -> bool:
        """True the first time this process files (or finds) the automatic maintenance ``maintenance``."""
        with self._lock:
            if maintenance in self._filed:
                return False
            self._filed.add(maintenance)
            return True


def _power_status(node: Mapping[str, Any]) -> dict[str, PowerLimitStatus]:
    try:
        return parse_status(((node.get("metadata") or {}).get("annotations") or {}).get(keys.POWER_STATUS_ANNOTATION))
    except ValueError:
        return {}
