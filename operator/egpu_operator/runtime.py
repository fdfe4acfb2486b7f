"""The running operator: its work queues, workers, threads and the views they read.

``handlers`` wires kopf to an ``Operator``; everything that lives as long as the process
(queues, the informers, the API probe, the reconcile threads) is
an attribute here, built from one ``OperatorConfig``, never module-level state.

Triggers put a deployment's key on one work queue (``workqueue``), drained by a few workers:
a new generation of the deployment (its own status writes do not count), a change in a node's
placement facts (node events are compared with the last facts seen, so heartbeats and status
churn trigger nothing), an event of one of its pods, deletion (to release power limits), and a
resync tick that notices agents whose Lease went stale. The blocking reconcile runs in a
worker thread; the event loop never blocks. GPUMaintenances have a queue and one worker of
their own; an open one is looked at again every poll interval, as it waits on other objects'
progress.

Blindness is not death (``liveness``): a thread asks the API server's ``/readyz`` every few
seconds, Lease events are recorded as the operator observes them, and agents are judged on
those observations only; see README.md (Failure safety) for the thresholds.

Why a queue and not a kopf daemon per deployment: at 1,000 nodes and 100 deployments, kopf's
per-object bookkeeping for 100 waiting daemons took about 30% of the operator's CPU
(docs/measurements.md). A queue keeps the work proportional to what changed.

Two replicas, one leader (``leader``): every replica keeps its informers warm, but only the one
holding the leader Lease runs the workers, and its writes are fenced (``leader.Fenced``). A
replica that loses the Lease exits, so it restarts as a follower.

Reads come from informers (``informers``, ``reads``), one thread each; their stores are safe to
read from any thread, and their change callbacks hop onto the event loop before touching a queue.
"""

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from egpu_api import keys
from egpu_api.maintenance import TERMINAL_PHASES
from egpu_operator import agentpods, leader, maintenance, metrics, nodewatch, power, reads
from egpu_operator.cache import Cache
from egpu_operator.config import OperatorConfig
from egpu_operator.health import HealthServer
from egpu_operator.informers import ApiSource, Informers, Key
from egpu_operator.kube import Kube
from egpu_operator.liveness import Liveness, Verdicts
from egpu_operator.metrics import (
    AGENTS,
    AGENTS_RESTARTING,
    API_VISIBLE,
    DISRUPTION,
    ERRORS,
    LEADER,
    LEADER_CONFLICT,
    REGISTRY,
    TRIGGERS,
)
from egpu_operator.reconcile import POWER_FINALIZER, reconcile, release_power
from egpu_operator.workqueue import WorkQueue

log = logging.getLogger("egpu_operator.handlers")
#: At most one sweep of node changes a second, however many nodes change.
NODE_SWEEP_S = 1.0
#: How often the troubled nodes are looked at for automatic maintenance.
AUTO_MAINTENANCE_S = 5.0
#: The event loop notes that it turns this often; /healthz fails when it has not for LOOP_STALL_S.
LOOP_BEAT_S = 1.0
LOOP_STALL_S = 30.0
DeploymentKey = tuple[str, str]


class Operator:
    """One running operator. ``kube`` does the writes; ``watch_client`` is a client of its own for
    the long-running watches and the API probe. With ``leases`` the replica takes part in the
    leader election and writes only while it leads; without, it acts alone (unit tests).
    ``informers``: the read side (default: ``reads.build`` over ``watch_client``); a test hands in
    informers without a source and feeds them."""

    def __init__(
        self,
        config: OperatorConfig,
        kube: Kube,
        watch_client: Any,
        leases: leader.LeaseApi | None = None,
        informers: Informers | None = None,
    ) -> None:
        self.config, self.kube, self._watch_client = config, kube, watch_client
        self.elector: leader.Elector | None = None
        if leases is not None:
            self.elector = leader.Elector(config.leader.with_identity(), leases, self._on_lead, self._on_lost, self._on_refuse)
            self.kube = leader.Fenced(kube, self.elector.confirm)
        self.exit: Callable[[int], None] = os._exit  # on lost leadership; a test replaces it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._election: threading.Thread | None = None
        self.cache = Cache(config.liveness, shared_gpu_resources=config.shared_gpu_resources)
        self.queue = WorkQueue()
        self.maintenance_queue = WorkQueue()
        if informers is None:
            informers = reads.build(config, ApiSource(watch_client) if watch_client is not None else None)
            self._watching = watch_client is not None  # start (and stop) the informers' threads
        else:
            self._watching = False  # a test's informers, fed by hand
        self.informers = informers
        self._wire_triggers()
        self._disruption = False  # last verdict, to log a change once
        self._agent_liveness: dict[str, str] = {}  # node -> liveness as last published per node
        self._restarting: set[str] = set()  # nodes held unknown as restarting at the last judgment, to log each once
        self._stopping = threading.Event()
        self._indexed = asyncio.Event()
        self._nodes_changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []  # tasks that must run as long as the operator does
        self._last_beat: float | None = None  # when the event loop last turned; None before start
        # Reconciles block on API calls; they get threads of their own. kopf runs sync handlers in the
        # default executor, and sharing it made the indexes lag behind the workers' writes.
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="egpu-reconcile")

    def serve_http(self) -> HealthServer | None:
        """/metrics, /healthz and /readyz on the configured port (0: none)."""
        if not self.config.metrics_port:
            return None
        metrics.watch_readiness(lambda: self.readiness_problem() is None)
        return HealthServer(self.config.metrics_port, REGISTRY, self.health_problem, self.readiness_problem).start()

    def health_problem(self, now: float | None = None) -> str | None:
        """None while the event loop turns and every worker runs; else what is wrong (/healthz)."""
        if self._last_beat is None:
            return None  # not started yet: kopf is still starting up
        stalled_s = (now if now is not None else time.monotonic()) - self._last_beat
        if stalled_s > LOOP_STALL_S:
            return f"the event loop has not turned for {stalled_s:.0f} s"
        stopped = sorted(task.get_name() for task in self._loops if task.done())
        if self._election is not None and not self._election.is_alive() and not self._stopping.is_set():
            stopped.append(self._election.name)
        if stopped:
            return f"stopped: {', '.join(stopped)}"
        return None

    def readiness_problem(self) -> str | None:
        """None once every informer's first listing is in (/readyz); else which informer is not
        synced, or whose resource the API server does not serve (a CRD deleted). A follower is
        ready too: its informers are warm, so it can take over at once (and a rolling update, which
        waits for the new pod's readiness, goes on while the old pod still leads)."""
        problem = self.informers.problem()
        if problem is None and not self.ready:
            return "waiting for the workers to start"
        return problem

    # -- what the informers and handlers call --------------------------------------------------

    def nodes(self) -> dict[str, dict[str, Any]]:
        return reads.nodes(self.informers)

    def _wire_triggers(self) -> None:
        """Each informer's changes onto the work queues. Deployments are enqueued from the same
        watch that fills their store, so a worker never takes a key before its object is there."""
        self.informers[reads.DEPLOYMENTS].on_change = self._deployment_changed
        self.informers[reads.REPLICA_PODS].on_change = self._labelled_changed(reads.REPLICA_PODS, "pod")
        self.informers[reads.SERVICES].on_change = self._labelled_changed(reads.SERVICES, "service")  # edited: put back
        self.informers[reads.NODES].on_change = self._node_changed
        self.informers[reads.NODES].on_gap = lambda: self.cache.visibility.gap(time.monotonic())
        self.informers[reads.AGENT_LEASES].on_change = self._lease_changed

    def _deployment_changed(self, key: Key, old: Any, new: Any) -> None:
        if new is None:
            self.cache.infeasible("/".join(key), False)
            metrics.forget_deployment(*key)
        fresh = new is not None and new["metadata"].get("generation") != (new.get("status") or {}).get("observedGeneration")
        if old is None or new is None or fresh or new["metadata"].get("deletionTimestamp"):
            self._threadsafe(self.enqueue, key, "deployment")

    def _labelled_changed(self, informer: str, source: str) -> Callable[[Key, Any, Any], None]:
        """The deployment an object belongs to, as its informer indexes it, before and after."""
        deployment_of = self.informers[informer].spec.indexes[reads.BY_DEPLOYMENT]

        def changed(key: Key, old: Any, new: Any) -> None:
            owners = {owner for view in (old, new) if view is not None for owner in deployment_of(view)}
            for owner in owners:
                self._threadsafe(self.enqueue, owner, source)

        return changed

    def _node_changed(self, key: Key, old: Any, new: Any) -> None:
        """Only a change in what placement reads wakes placement (``nodewatch.placement_hash``)."""
        if old is None or new is None or nodewatch.placement_hash(old) != nodewatch.placement_hash(new):
            self._threadsafe(self._nodes_changed.set)

    def _lease_changed(self, key: Key, old: Any, new: Any) -> None:
        if new is not None:  # when the operator saw the renewal, not when the agent says it renewed
            self.cache.heartbeats.observe(new[0], new[1], time.monotonic())

    def _threadsafe(self, call: Callable[..., None], *args: Any) -> None:
        if self._loop is None:
            call(*args)  # not started: a test feeding the informers by hand
        else:
            self._loop.call_soon_threadsafe(call, *args)

    def enqueue(self, key: DeploymentKey, source: str) -> None:
        TRIGGERS.labels(source).inc()
        self.queue.add(key)

    def enqueue_maintenance(self, name: str) -> None:
        TRIGGERS.labels("maintenance").inc()
        self.maintenance_queue.add(name)

    @property
    def ready(self) -> bool:
        """Every informer has its first answer (a listing, or its resource is not served)."""
        return self._indexed.is_set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._watching:
            self.informers.start()
        threading.Thread(target=self._probe_api, name="egpu-api-probe", daemon=True).start()
        self._spawn(self._ready(), "egpu-ready", lasting=False)
        self._last_beat = time.monotonic()
        self._spawn(self._beat(), "egpu-loop-beat")
        LEADER.set(0)
        if self.elector is None:
            self._start_workers()
        else:
            election = threading.Thread(target=self.elector.run, args=(self._stopping,), name="egpu-leader-election", daemon=True)
            self._election = election
            self._election.start()

    def _start_workers(self) -> None:
        """What only the leader runs: the reconcile and maintenance workers and what feeds them."""
        if self.elector is not None:  # a follower's queue may hold keys from before: look at everything once
            LEADER.set(1)
            self._spawn(self._enqueue_all_once_indexed("leader"), "egpu-leader-resync", lasting=False)
        for number in range(self.config.workers):
            self._spawn(self._worker(), f"egpu-worker-{number}")
        self._spawn(self._resync(), "egpu-resync")
        self._spawn(self._sweep_node_changes(), "egpu-node-sweep")
        # One maintenance worker: maintenances start one after another under the parallel limit.
        self._spawn(self._maintenance_worker(), "egpu-maintenance")
        if self.config.auto_maintenance:
            self._spawn(self._file_automatic(), "egpu-auto-maintenance")

    def stop(self) -> None:
        """On SIGTERM: stop the threads of our own and drop queued reconciles; one already running
        finishes its current API call (each write is whole on its own, and the next start resumes
        from what the API server holds). The leader hands its Lease back, waiting at most 1 s for
        the API server, so a follower takes over at its next look instead of after the Lease expires."""
        self._stopping.set()
        if self.elector is not None:
            releasing = threading.Thread(target=self.elector.release, name="egpu-leader-release", daemon=True)
            releasing.start()
            releasing.join(timeout=1.0)
        if self._watching:
            self.informers.stop(timeout_s=0.5)  # each watch's connection is shut: their threads end at once
        self._pool.shutdown(wait=False, cancel_futures=True)
        for task in self._tasks:
            task.cancel()

    # -- leadership (called from the election thread, or a writer's thread through the fence) ----

    def _on_lead(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._start_workers)

    def _on_refuse(self, reason: str | None) -> None:
        LEADER_CONFLICT.set(0 if reason is None else 1)

    def _on_lost(self, reason: str) -> None:
        """Exit rather than step down: reconciles in flight, queued retries and kopf's state would
        all have to be unwound; a restarted process is a clean follower with nothing in flight."""
        LEADER.set(0)
        log.error(
            "leadership lost: exiting so that this replica restarts as a follower",
            extra={"reason": reason, "exit_code": leader.LOST_EXIT_CODE},
        )
        for stream in (*logging.getLogger().handlers, sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # nothing may keep this process from exiting
                stream.flush()
        self.exit(leader.LOST_EXIT_CODE)

    # -- loops ---------------------------------------------------------------------------------

    def _spawn(self, coroutine: Any, name: str, lasting: bool = True) -> None:
        # asyncio keeps only weak references to tasks: hold them, or a worker can vanish mid-flight.
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        if lasting:
            self._loops.append(task)

    async def _beat(self) -> None:
        while True:
            self._last_beat = time.monotonic()
            await asyncio.sleep(LOOP_BEAT_S)

    async def _ready(self) -> None:
        """Work starts once every informer has listed once: placing against a half-known fleet
        would report nodes as missing."""
        await _settled(lambda: self.informers.settled)
        self._nodes_changed.clear()  # the first listing is not a change: every deployment is reconciled once anyway
        self._indexed.set()

    def _enqueue_all(self, source: str) -> None:
        keys_now = reads.deployment_keys(self.informers)
        TRIGGERS.labels(source).inc(len(keys_now))
        for key in keys_now:
            self.queue.add(key)

    async def _enqueue_all_once_indexed(self, source: str) -> None:
        await self._indexed.wait()
        self._enqueue_all(source)

    async def _resync(self) -> None:
        await self._indexed.wait()
        while True:
            await asyncio.sleep(self.config.resync_s)
            self._enqueue_all("resync")

    async def _sweep_node_changes(self) -> None:
        """At most one sweep a second however many nodes change: a rolling update of 1,000 node
        agents must not re-queue every deployment 1,000 times."""
        await self._indexed.wait()
        while True:
            await self._nodes_changed.wait()
            self._nodes_changed.clear()
            self._enqueue_all("node")
            await asyncio.sleep(NODE_SWEEP_S)

    def _probe_api(self) -> None:
        """Whether the operator sees the API server, every probe interval, from a thread of its own:
        ``/readyz`` fails while the server is down or has lost etcd; a pause of this process shows
        as a probe that is late (``Visibility.seeing``)."""
        interval_s = self.config.liveness.probe_interval_s
        failing = False
        while not self._stopping.is_set():
            started = time.monotonic()
            problem = _api_problem(self._watch_client, interval_s)
            if problem is None:
                self.cache.visibility.probe_succeeded(time.monotonic())
                if failing:
                    log.info("API server ready again")
            elif not failing:
                log.warning("API server not ready: no agent is judged dead until it is", extra={"error": problem})
            failing = problem is not None
            API_VISIBLE.set(0 if failing else 1)
            self._stopping.wait(max(0.0, interval_s - (time.monotonic() - started)))

    # -- InferenceDeployments ------------------------------------------------------------------

    async def _worker(self) -> None:
        await self._indexed.wait()
        while True:
            key: Any = await self.queue.get()  # (namespace, name)
            try:
                if await self._process(key):
                    self.queue.add_rate_limited(key)  # an eviction or a pod was refused: ask again later
                else:
                    self.queue.forget(key)
            except Exception as error:
                ERRORS.labels(type(error).__name__).inc()
                log.warning("reconcile failed", extra={"deployment": "/".join(str(part) for part in key), "error": str(error)})
                self.queue.add_after(key, 1.0)
            finally:
                self.queue.done(key)

    async def _process(self, key: DeploymentKey) -> bool:
        """Reconcile one deployment; True when it should run again soon."""
        namespace, name = key
        deployment = self.informers[reads.DEPLOYMENTS].get(key)
        if deployment is None:
            self.cache.infeasible(f"{namespace}/{name}", False)
            return False
        loop = asyncio.get_running_loop()
        if deployment["metadata"].get("deletionTimestamp"):
            # Pods go by owner reference; power requests are node annotations, so we drop them.
            if POWER_FINALIZER in (deployment["metadata"].get("finalizers") or []):
                owning = power.owned_by(self.nodes(), f"{namespace}/{name}")
                await loop.run_in_executor(self._pool, release_power, self.kube, deployment, owning)
            return False
        nodes_now = self.nodes()
        fleet = reads.fleet(self.informers, self.cache, self._verdicts(nodes_now), self.config)
        pods, budget, service, claims = reads.inputs(self.informers, deployment, key)
        return await loop.run_in_executor(
            self._pool, reconcile, self.kube, self.cache, deployment, fleet, pods, budget, service, claims
        )

    def _verdicts(self, nodes_now: Mapping[str, Mapping[str, Any]]) -> Verdicts:
        """Judge every node that runs (or ran) an agent (``reads.judged``)."""
        judged = reads.judged(self.informers, nodes_now)
        restarts = agentpods.restarts(reads.agent_pods(self.informers), judged)
        verdicts = self.cache.heartbeats.judge(judged, self.cache.visibility, time.monotonic(), datetime.now(UTC), restarts)
        for state in Liveness:
            AGENTS.labels(state.value).set(sum(1 for v in verdicts.by_node.values() if v is state))
        published = {node: state.value for node, state in verdicts.by_node.items()}
        if published != self._agent_liveness:  # one series per node: written on a change, not per reconcile
            metrics.observe_agents(published, [s.value for s in Liveness])
            self._agent_liveness = published
        AGENTS_RESTARTING.set(len(verdicts.restarting))
        DISRUPTION.set(int(verdicts.disruption))
        if verdicts.disruption != self._disruption:
            self._disruption = verdicts.disruption
            message = "most node agents look dead at once: treating it as a control-plane problem, removing nothing"
            extra = {"dead": verdicts.dead_seen, "judged": len(judged)}
            (log.warning if self._disruption else log.info)(message if self._disruption else "full disruption over", extra=extra)
        for node in verdicts.restarting.keys() - self._restarting:
            log.info("node agent silent but restarting: not judged dead", extra={"node": node, "seen": verdicts.restarting[node]})
        self._restarting = set(verdicts.restarting)
        return verdicts

    # -- GPUMaintenances -----------------------------------------------------------------------

    async def _maintenance_worker(self) -> None:
        await self._indexed.wait()
        loop = asyncio.get_running_loop()
        while True:
            name = str(await self.maintenance_queue.get())
            again = True
            try:
                deployments, replicas = reads.replicas_snapshot(self.informers)
                phase = await loop.run_in_executor(
                    self._pool,
                    maintenance.step,
                    self.kube,
                    self.cache,
                    name,
                    deployments,
                    replicas,
                    self.config.max_parallel_maintenances,
                    None,
                    self.config.dra_drivers,
                    self.config.shared_gpu_resources,
                )
                again = phase is not None and phase not in TERMINAL_PHASES
            except Exception as error:
                ERRORS.labels(type(error).__name__).inc()
                log.warning("maintenance step failed", extra={"maintenance": name, "error": str(error)})
            finally:
                self.maintenance_queue.done(name)
            if again:
                loop.call_later(self.config.maintenance_poll_s, self.maintenance_queue.add, name)

    async def _file_automatic(self) -> None:
        """Opt-in: a node whose agent reports a lost GPU or a degraded link gets a GPUMaintenance.
        Needs only the nodes: it runs in a cluster that has no InferenceDeployment yet too."""
        await _settled(lambda: self.informers[reads.NODES].settled)
        loop = asyncio.get_running_loop()
        while True:
            troubled = {
                name: health
                for name, node in self.nodes().items()
                if (health := node["metadata"]["labels"].get(keys.HEALTH_LABEL)) in ("lost", "degraded")
            }
            if troubled:
                try:
                    for created in await loop.run_in_executor(
                        self._pool, maintenance.file_automatic, self.kube, self.cache, troubled
                    ):
                        self.maintenance_queue.add(created)
                except Exception as error:
                    log.warning("automatic maintenance failed", extra={"error": str(error)})
            await asyncio.sleep(AUTO_MAINTENANCE_S)


async def _settled(done: Callable[[], bool]) -> None:
    """Wait for informers' first listings without parking a thread on them: a thread blocked in
    Event.wait() would hold up the process's exit on SIGTERM while the API server is away."""
    while not done():
        await asyncio.sleep(0.1)


def _api_problem(api_client: Any, timeout_s: float) -> str | None:
    """None when the API server's ``/readyz`` answers 200, else what went wrong."""
    try:
        method, url, headers, _, _ = api_client.param_serialize("GET", "/readyz", auth_settings=["BearerToken"])
        response = api_client.call_api(method, url, header_params=headers, _request_timeout=timeout_s)
        response.read()
        return None if response.status == 200 else f"/readyz answered HTTP {response.status}"
    except Exception as error:
        return str(error)[:300]
