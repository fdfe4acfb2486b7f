"""kopf wiring: indexes that hold what placement needs, and work queues of deployments and maintenances.

Memory: the indexes keep slim views of pods, agent Leases, PodDisruptionBudgets and
deployments, not whole objects. Nodes are not a kopf index: ``nodewatch`` keeps slim copies
from a plain watch thread, because kopf's per-event machinery for 1,000 busy Nodes cost more
CPU than placement (docs/measurements.md).

Triggers put a deployment's key on one work queue (``workqueue``), drained by a few workers:
a new generation of the deployment (its own status writes do not count), a change in a node's
placement facts (node events are compared with the last facts seen, so heartbeats and status
churn trigger nothing), an event of one of its pods, deletion (to release power limits), and a
resync tick (30 s) that notices agents whose Lease went stale. The blocking reconcile runs in
a worker thread; the event loop never blocks. GPUMaintenances have a queue and one worker of
their own; an open one is looked at again every 2 s, as it waits on other objects' progress.

Blindness is not death (``liveness``): a thread asks the API server's ``/readyz`` every few
seconds, Lease events are recorded as the operator observes them, and agents are judged on
those observations only; see README.md (Failure safety) for the thresholds.

Why a queue and not a kopf daemon per deployment: at 1,000 nodes and 100 deployments, kopf's
per-object bookkeeping for 100 waiting daemons took about 30% of the operator's CPU
(docs/measurements.md). A queue keeps the work proportional to what changed.
"""

import asyncio
import logging
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import kopf

from egpu_api import keys
from egpu_api.maintenance import TERMINAL_PHASES
from egpu_operator import facts, maintenance, power
from egpu_operator.kube import GROUP, MAINTENANCES, PLURAL, VERSION, Kube
from egpu_operator.liveness import Heartbeats, Liveness, LivenessConfig, Verdicts, Visibility
from egpu_operator.metrics import AGENTS, API_VISIBLE, DISRUPTION, TRIGGERS
from egpu_operator.nodewatch import NodeWatch
from egpu_operator.reconcile import POWER_FINALIZER, Fleet, forget_infeasible, reconcile, release_power
from egpu_operator.workqueue import WorkQueue

log = logging.getLogger("egpu_operator.handlers")
RESYNC_S = float(os.environ.get("EGPU_OPERATOR_RESYNC_SECONDS", "30"))
# How agents are judged alive or dead (egpu_operator.liveness); agents renew every 10 s.
LIVENESS = LivenessConfig(
    lease_ttl_s=float(os.environ.get("EGPU_OPERATOR_LEASE_TTL_SECONDS", "40")),
    grace_s=float(os.environ.get("EGPU_OPERATOR_AGENT_GRACE_SECONDS", "20")),
    probe_interval_s=float(os.environ.get("EGPU_OPERATOR_PROBE_INTERVAL_SECONDS", "2")),
    blind_after_s=float(os.environ.get("EGPU_OPERATOR_BLIND_AFTER_SECONDS", "6")),
    disruption_fraction=float(os.environ.get("EGPU_OPERATOR_DISRUPTION_FRACTION", "0.55")),
)

WORKERS = int(os.environ.get("EGPU_OPERATOR_WORKERS", "4"))
MAX_PARALLEL_MAINTENANCES = int(os.environ.get("EGPU_OPERATOR_MAX_PARALLEL_MAINTENANCES", "1"))
AUTO_MAINTENANCE = os.environ.get("EGPU_OPERATOR_AUTO_MAINTENANCE", "false").lower() in ("1", "true", "yes", "on")
# An open maintenance is looked at again this often: it waits on pods becoming Ready and on
# budgets, which are not its own events. There are a handful at a time, never one per node.
MAINTENANCE_POLL_S = float(os.environ.get("EGPU_OPERATOR_MAINTENANCE_POLL_SECONDS", "2"))
_queue: WorkQueue | None = None
_maintenance_queue: WorkQueue | None = None
_heartbeats = Heartbeats(LIVENESS)
_visibility = Visibility(LIVENESS, time.monotonic())
_disruption = False  # last verdict, to log a change once
_stopping = threading.Event()
_indexes: dict[str, Any] = {}  # the live kopf indexes, captured from the first handler call
_indexed = asyncio.Event()
_nodes_changed = asyncio.Event()
NODE_SWEEP_S = 1.0
_tasks: set[asyncio.Task[None]] = set()
# Reconciles block on API calls; they get threads of their own. kopf runs sync handlers in the
# default executor, and sharing it made the indexes lag behind the workers' writes.
_pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="egpu-reconcile")
_kube: Kube | None = None
_watch_client: Any = None
_node_watch: NodeWatch | None = None
_captured = asyncio.Event()


def kube() -> Kube:
    if _kube is None:
        raise RuntimeError("the operator's API client is set at startup")
    return _kube


def set_kube(value: Kube, watch_client: Any) -> None:
    """The API layer, and a client of its own for the long-running node watch."""
    global _kube, _watch_client
    _kube, _watch_client = value, watch_client


def nodes() -> dict[str, dict[str, Any]]:
    if _node_watch is None:
        raise RuntimeError("the node watch starts at startup")
    return _node_watch.snapshot()


# -- indexes ---------------------------------------------------------------------------------------


# Only Leases in the agents' namespace: a tenant allowed to write Leases in its own namespace could
# otherwise keep a dead node looking alive by forging egpu-node-agent-<node> there.
AGENT_NAMESPACE = os.environ.get("EGPU_OPERATOR_AGENT_NAMESPACE", "egpu-system")


@kopf.index(
    "coordination.k8s.io", "v1", "leases",
    when=lambda name, namespace, **_: namespace == AGENT_NAMESPACE and name.startswith(keys.AGENT_LEASE_PREFIX),
)  # fmt: skip
async def heartbeats_index(name: str, spec: Any, **_: Any) -> Any:
    node, renewed = name.removeprefix(keys.AGENT_LEASE_PREFIX), facts.lease_time({"spec": dict(spec)})
    _heartbeats.observe(node, renewed, time.monotonic())  # when the operator saw it, not when the agent says
    return {node: renewed}


def _slim_pod(body: Any) -> dict[str, Any]:
    plain = _plain(body)
    return {
        "metadata": {
            key: plain["metadata"].get(key) for key in ("name", "namespace", "labels", "deletionTimestamp", "ownerReferences")
        },
        "spec": {key: plain.get("spec", {}).get(key) for key in ("nodeName", "affinity", "containers")},
        "status": {key: plain.get("status", {}).get(key) for key in ("phase", "conditions")},
    }


@kopf.index("pods", labels={facts.DEPLOYMENT_LABEL: kopf.PRESENT})
async def replica_pods_index(namespace: str, labels: Mapping[str, str], body: Any, **_: Any) -> Any:
    return {(namespace, labels[facts.DEPLOYMENT_LABEL]): _slim_pod(body)}


def _holds_gpu(body: Any, **_: Any) -> bool:
    phase = (body.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and facts.gpu_requests(_plain(body)) > 0


@kopf.index(GROUP, VERSION, PLURAL)
async def deployments_index(namespace: str, name: str, body: Any, **_: Any) -> Any:
    deployment = _plain(body)
    (deployment.get("status") or {}).pop("kopf", None)
    return {(namespace, name): deployment}


@kopf.index("pods", when=_holds_gpu)
async def gpu_usage_index(name: str, body: Any, **_: Any) -> Any:
    pod = _slim_pod(body)
    node = pod["spec"].get("nodeName") or facts._affinity_node(pod)
    return {node: (name, facts.gpu_requests(pod))} if node else {}


@kopf.index("policy", "v1", "poddisruptionbudgets", labels={facts.DEPLOYMENT_LABEL: kopf.PRESENT})
async def budgets_index(namespace: str, labels: Mapping[str, str], spec: Any, **_: Any) -> Any:
    return {(namespace, labels[facts.DEPLOYMENT_LABEL]): spec.get("minAvailable")}


# -- triggers ---------------------------------------------------------------------------------------


def queue() -> WorkQueue:
    global _queue
    if _queue is None:
        _queue = WorkQueue()
    return _queue


def maintenance_queue() -> WorkQueue:
    global _maintenance_queue
    if _maintenance_queue is None:
        _maintenance_queue = WorkQueue()
    return _maintenance_queue


def _capture(indexes: dict[str, Any]) -> None:
    if not _captured.is_set():
        _indexes.update(indexes)
        _captured.set()


def _enqueue_all(source: str) -> None:
    keys_now = list(_indexes.get("deployments_index", {}).keys())
    TRIGGERS.labels(source).inc(len(keys_now))
    for key in keys_now:
        queue().add(key)


@kopf.on.event("pods", labels={facts.DEPLOYMENT_LABEL: kopf.PRESENT})
async def replica_pod_changed(namespace: str, labels: Any, **kwargs: Any) -> None:
    _capture({key: value for key, value in kwargs.items() if key.endswith("_index")})
    TRIGGERS.labels("pod").inc()
    queue().add((namespace, labels[facts.DEPLOYMENT_LABEL]))


@kopf.on.event(GROUP, VERSION, PLURAL)
async def deployment_changed(namespace: str, name: str, type: str, meta: Any, status: Any, **kwargs: Any) -> None:
    _capture({key: value for key, value in kwargs.items() if key.endswith("_index")})
    fresh = meta.get("generation") != (status or {}).get("observedGeneration")
    if type in (None, "ADDED") or fresh or meta.get("deletionTimestamp"):
        TRIGGERS.labels("deployment").inc()
        queue().add((namespace, name))
    if type == "DELETED":
        forget_infeasible(f"{namespace}/{name}")


@kopf.on.event(GROUP, VERSION, MAINTENANCES)
async def maintenance_changed(name: str, **kwargs: Any) -> None:
    _capture({key: value for key, value in kwargs.items() if key.endswith("_index")})
    TRIGGERS.labels("maintenance").inc()
    maintenance_queue().add(name)


@kopf.on.startup()
async def start_workers(**_: Any) -> None:
    global _node_watch
    loop = asyncio.get_running_loop()
    _node_watch = NodeWatch(
        _watch_client,
        lambda: loop.call_soon_threadsafe(_nodes_changed.set),
        on_gap=lambda: _visibility.gap(time.monotonic()),
    )
    _node_watch.start()
    threading.Thread(target=_probe_api, args=(_watch_client,), name="egpu-api-probe", daemon=True).start()
    _tasks.add(asyncio.create_task(_ready(_node_watch), name="egpu-ready"))
    # asyncio keeps only weak references to tasks: hold them, or a worker can vanish mid-flight.
    _tasks.update(asyncio.create_task(_worker(number), name=f"egpu-worker-{number}") for number in range(WORKERS))
    _tasks.add(asyncio.create_task(_resync(), name="egpu-resync"))
    _tasks.add(asyncio.create_task(_sweep_node_changes(), name="egpu-node-sweep"))
    # One maintenance worker: maintenances start one after another under the parallel limit.
    _tasks.add(asyncio.create_task(_maintenance_worker(), name="egpu-maintenance"))
    if AUTO_MAINTENANCE:
        _tasks.add(asyncio.create_task(_file_automatic(), name="egpu-auto-maintenance"))


async def _ready(watch: NodeWatch) -> None:
    """Work starts once the kopf indexes are captured and every node has been listed once:
    placing against a half-known fleet would report nodes as missing."""
    await _captured.wait()
    await _synced(watch)
    _nodes_changed.clear()  # the first listing is not a change: every deployment is reconciled once anyway
    _indexed.set()


async def _synced(watch: NodeWatch) -> None:
    """Wait for the node watch's first listing without parking a thread on it: a thread blocked
    in Event.wait() would hold up the process's exit on SIGTERM while the API server is away."""
    while not watch.synced.is_set():
        await asyncio.sleep(0.1)


@kopf.on.cleanup()
async def stop_threads(**_: Any) -> None:
    """On SIGTERM: stop the threads of our own and drop queued reconciles; one already running
    finishes its current API call (each write is whole on its own, and the next start resumes
    from what the API server holds)."""
    _stopping.set()
    if _node_watch is not None:
        _node_watch.stop()
    _pool.shutdown(wait=False, cancel_futures=True)
    for task in _tasks:
        task.cancel()


async def _resync() -> None:
    await _indexed.wait()
    while True:
        await asyncio.sleep(RESYNC_S)
        _enqueue_all("resync")


async def _sweep_node_changes() -> None:
    """At most one sweep a second however many nodes change: a rolling update of 1,000 node
    agents must not re-queue every deployment 1,000 times."""
    await _indexed.wait()
    while True:
        await _nodes_changed.wait()
        _nodes_changed.clear()
        _enqueue_all("node")
        await asyncio.sleep(NODE_SWEEP_S)


def _probe_api(api_client: Any) -> None:
    """Whether the operator sees the API server, every probe interval, from a thread of its own:
    ``/readyz`` fails while the server is down or has lost etcd; a pause of this process shows
    as a probe that is late (``Visibility.seeing``)."""
    failing = False
    while not _stopping.is_set():
        started = time.monotonic()
        try:
            method, url, headers, _, _ = api_client.param_serialize("GET", "/readyz", auth_settings=["BearerToken"])
            response = api_client.call_api(method, url, header_params=headers, _request_timeout=LIVENESS.probe_interval_s)
            response.read()
            problem = None if response.status == 200 else f"/readyz answered HTTP {response.status}"
        except Exception as error:
            problem = str(error)[:300]
        if problem is None:
            _visibility.probe_succeeded(time.monotonic())
            if failing:
                log.info("API server ready again")
        elif not failing:
            log.warning("API server not ready: no agent is judged dead until it is", extra={"error": problem})
        failing = problem is not None
        API_VISIBLE.set(0 if failing else 1)
        _stopping.wait(max(0.0, LIVENESS.probe_interval_s - (time.monotonic() - started)))


# -- the work --------------------------------------------------------------------------------------


def _verdicts(nodes_now: dict[str, dict[str, Any]]) -> Verdicts:
    """Judge every node that runs (or ran) an agent: it labelled the node, or it has a Lease.
    Nodes that never had one (control plane, CPU nodes) would otherwise count as dead ones."""
    global _disruption
    leases = _indexes["heartbeats_index"]
    judged = [name for name, node in nodes_now.items() if keys.LABEL_SCHEMA_LABEL in node["metadata"]["labels"] or name in leases]
    verdicts = _heartbeats.judge(judged, _visibility, time.monotonic(), datetime.now(UTC))
    for state in Liveness:
        AGENTS.labels(state.value).set(sum(1 for v in verdicts.by_node.values() if v is state))
    DISRUPTION.set(int(verdicts.disruption))
    if verdicts.disruption != _disruption:
        _disruption = verdicts.disruption
        message = "most node agents look dead at once: treating it as a control-plane problem, removing nothing"
        extra = {"dead": verdicts.dead_seen, "judged": len(judged)}
        (log.warning if _disruption else log.info)(message if _disruption else "full disruption over", extra=extra)
    return verdicts


def _fleet() -> Fleet:
    nodes_now = nodes()
    usage_index = _indexes["gpu_usage_index"]
    usage = {node: sum(gpus for _, gpus in store) for node, store in usage_index.items()}
    fleet = Fleet(nodes_now, _verdicts(nodes_now), usage)
    fleet.gpu_pods = {pod for store in usage_index.values() for pod, _ in store}
    return fleet


async def _worker(number: int) -> None:
    await _indexed.wait()
    while True:
        key: Any = await queue().get()  # (namespace, name)
        try:
            if await _process(key):
                queue().add_rate_limited(key)  # an eviction or a pod was refused: ask again later
            else:
                queue().forget(key)
        except Exception as error:
            from egpu_operator.metrics import ERRORS

            ERRORS.labels(type(error).__name__).inc()
            log.warning("reconcile failed", extra={"deployment": "/".join(str(part) for part in key), "error": str(error)})
            queue().add_after(key, 1.0)
        finally:
            queue().done(key)


async def _process(key: Any) -> bool:
    """Reconcile one deployment; True when it should run again soon."""
    namespace, name = key
    store = _indexes["deployments_index"].get(key)
    if not store:
        forget_infeasible(f"{namespace}/{name}")
        return False
    deployment = next(iter(store))
    if deployment["metadata"].get("deletionTimestamp"):
        # Pods go by owner reference; power requests are node annotations, so we drop them.
        if POWER_FINALIZER in (deployment["metadata"].get("finalizers") or []):
            owner = f"{namespace}/{name}"
            owning = [
                node_name
                for node_name, node in nodes().items()
                if owner in power.parse_owners(node["metadata"]["annotations"].get(keys.POWER_OWNERS_ANNOTATION))[0].values()
            ]
            await asyncio.get_running_loop().run_in_executor(_pool, release_power, kube(), deployment, owning)
        return False
    fleet = _fleet()
    # Only pods this deployment controls: a look-alike pod someone else made, labels and all, is
    # never counted as a replica, moved, or given a power limit.
    uid = deployment["metadata"].get("uid")
    pods = [
        view
        for pod in _indexes["replica_pods_index"].get(key, [])
        if facts.controller_uid(pod) == uid and (view := facts.pod_view(pod))
    ]
    budget = next(iter(_indexes["budgets_index"].get(key, [])), None)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool, reconcile, kube(), deployment, fleet, pods, budget)


async def _maintenance_worker() -> None:
    await _indexed.wait()
    loop = asyncio.get_running_loop()
    while True:
        name = str(await maintenance_queue().get())
        again = True
        try:
            phase = await loop.run_in_executor(
                _pool, maintenance.step, kube(), name, _deployment, _replica_pods, MAX_PARALLEL_MAINTENANCES
            )
            again = phase is not None and phase not in TERMINAL_PHASES
        except Exception as error:
            from egpu_operator.metrics import ERRORS

            ERRORS.labels(type(error).__name__).inc()
            log.warning("maintenance step failed", extra={"maintenance": name, "error": str(error)})
        finally:
            maintenance_queue().done(name)
        if again:
            loop.call_later(MAINTENANCE_POLL_S, maintenance_queue().add, name)


def _deployment(key: tuple[str, str]) -> Mapping[str, Any] | None:
    return next(iter(_indexes["deployments_index"].get(key, [])), None)


def _replica_pods(key: tuple[str, str]) -> list[Mapping[str, Any]]:
    return list(_indexes["replica_pods_index"].get(key, []))


async def _file_automatic() -> None:
    """Opt-in: a node whose agent reports a lost GPU or a degraded link gets a GPUMaintenance.
    Needs only the nodes: it runs in a cluster that has no InferenceDeployment yet too."""
    if _node_watch is not None:
        await _synced(_node_watch)
    loop = asyncio.get_running_loop()
    while True:
        troubled = {
            name: health
            for name, node in nodes().items()
            if (health := node["metadata"]["labels"].get(keys.HEALTH_LABEL)) in ("lost", "degraded")
        }
        if troubled:
            try:
                for created in await loop.run_in_executor(_pool, maintenance.file_automatic, kube(), troubled):
                    maintenance_queue().add(created)
            except Exception as error:
                log.warning("automatic maintenance failed", extra={"error": str(error)})
        await asyncio.sleep(5.0)


def _plain(value: Any) -> Any:
    """kopf's live views as plain dicts and lists, safe to hand to another thread."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
