"""Prometheus metrics of the operator.

Per-deployment series carry ``namespace`` and ``name`` (``name`` as kube-state-metrics' ``deployment``),
per-maintenance series ``name`` and ``node``, per-agent series ``node``: so an alert names the object.
A state is exported as kube-state-metrics does (``kube_pod_status_phase``): one series per possible
value, 1 for the current one and 0 for the others, so a change of state does not start a new series.
``_created`` series are off (``serve_defaults``).
"""

import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from egpu_api.maintenance import PHASES
from egpu_runtime import timestamps


class OperatorMetrics:
    """Every collector of the operator, on one registry: passed to the controllers, never reached as module state.

    ``DEFAULT`` is the process's instance (its registry is the one /metrics serves); a test makes its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._placement_collectors()
        self._operator_collectors()
        self._fleet_collectors()
        self._readiness_collectors()
        self._object_collectors()

    def _placement_collectors(self) -> None:
        """The process, the build, reconciles and placement."""
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        PlatformCollector(registry=self.registry)
        self.build = Info("egpu_operator_build", "Version of the operator", registry=self.registry)
        self.reconciles = Counter(
            "egpu_operator_reconciles", "Reconciles of InferenceDeployments", ["result"], registry=self.registry
        )
        self.placement_seconds = Histogram(
            "egpu_operator_placement_seconds",
            "Time to compute one deployment's placement",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=self.registry,
        )
        self.infeasible = Gauge(
            "egpu_operator_infeasible_deployments", "Deployments with replicas that cannot be placed", registry=self.registry
        )

    def _operator_collectors(self) -> None:
        """The operator process: errors, API requests, work-queue triggers, evictions."""
        self.errors = Counter("egpu_operator_errors", "Errors by kind", ["kind"], registry=self.registry)
        self.api_requests = Counter(
            "egpu_operator_api_requests", "Requests the operator sent to the API server", ["verb"], registry=self.registry
        )
        self.triggers = Counter(
            "egpu_operator_triggers", "Reasons a deployment was put on the work queue", ["source"], registry=self.registry
        )
        self.evictions = Counter(
            "egpu_operator_evictions",
            "Evictions requested, by who asked and the answer",
            ["by", "result"],
            registry=self.registry,
        )

    def _fleet_collectors(self) -> None:
        """Maintenances by phase and the node agents as the operator judges them."""
        self.maintenances = Gauge("egpu_operator_gpu_maintenances", "GPUMaintenances by phase", ["phase"], registry=self.registry)
        self.agents = Gauge(
            "egpu_operator_node_agents",
            "Node agents by judged liveness (alive, unknown, dead)",
            ["liveness"],
            registry=self.registry,
        )
        self.agents_restarting = Gauge(
            "egpu_operator_node_agents_restarting",
            "Silent node agents held unknown, not dead, because their pod is being replaced or starting",
            registry=self.registry,
        )
        self.disruption = Gauge(
            "egpu_operator_fleet_disruption",
            "1 while most agents look dead at once and nothing is removed",
            registry=self.registry,
        )
        self.agent_liveness = Gauge(
            "egpu_operator_node_agent_liveness",
            "1 for the judged liveness (alive, unknown, dead) of a node's agent, 0 for the others",
            ["node", "liveness"],
            registry=self.registry,
        )

    def _readiness_collectors(self) -> None:
        """Readiness, leadership and the API server as this process sees them."""
        self.ready = Gauge(
            "egpu_operator_ready",
            "1 while the operator's /readyz answers 200 (its first listings are in)",
            registry=self.registry,
        )
        self.leader = Gauge(
            "egpu_operator_leader", "1 while this replica holds the leader Lease and acts, else 0", registry=self.registry
        )
        self.leader_conflict = Gauge(
            "egpu_operator_leader_conflict",
            "1 while another release's operator holds the cluster and this one refuses to act",
            registry=self.registry,
        )
        self.api_visible = Gauge(
            "egpu_operator_api_server_ready", "1 while the API server's /readyz answers", registry=self.registry
        )

    def _object_collectors(self) -> None:
        """Per-deployment and per-maintenance series, named by the object."""
        deployment_labels = ["namespace", "name"]
        self.desired_replicas: Gauge = Gauge(
            "egpu_operator_deployment_replicas_desired",
            "spec.replicas of an InferenceDeployment",
            deployment_labels,
            registry=self.registry,
        )
        self.ready_replicas: Gauge = Gauge(
            "egpu_operator_deployment_replicas_ready",
            "Ready replica pods of an InferenceDeployment",
            deployment_labels,
            registry=self.registry,
        )
        self.deployment_infeasible: Gauge = Gauge(
            "egpu_operator_deployment_infeasible",
            "1 while an InferenceDeployment has replicas no node can take (or pods the API server refused), else 0",
            deployment_labels,
            registry=self.registry,
        )
        maintenance_labels = ["name", "node"]
        self.maintenance_phase: Gauge = Gauge(
            "egpu_operator_gpu_maintenance_phase",
            "1 for the phase a GPUMaintenance is in, 0 for the other phases",
            [*maintenance_labels, "phase"],
            registry=self.registry,
        )
        self.maintenance_ready_since: Gauge = Gauge(
            "egpu_operator_gpu_maintenance_ready_timestamp_seconds",
            "While a GPUMaintenance is Ready (its node cordoned and free of GPU work): its status.readyAt, in Unix seconds",
            maintenance_labels,
            registry=self.registry,
        )

    def observe_deployment(self, namespace: str, name: str, desired: int, ready: int, infeasible: bool) -> None:
        self.desired_replicas.labels(namespace, name).set(desired)
        self.ready_replicas.labels(namespace, name).set(ready)
        self.deployment_infeasible.labels(namespace, name).set(1 if infeasible else 0)

    def forget_deployment(self, namespace: str, name: str) -> None:
        """A deleted deployment's series go with it."""
        for gauge in (self.desired_replicas, self.ready_replicas, self.deployment_infeasible):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)


#: The process's metrics, served on /metrics. The module-level names are its collectors, kept for
#: the modules that still write them directly (runtime, handlers, the API layer).
DEFAULT = OperatorMetrics()
REGISTRY = DEFAULT.registry
BUILD = DEFAULT.build
RECONCILES = DEFAULT.reconciles
PLACEMENT_SECONDS = DEFAULT.placement_seconds
INFEASIBLE = DEFAULT.infeasible
ERRORS = DEFAULT.errors
API_REQUESTS = DEFAULT.api_requests
TRIGGERS = DEFAULT.triggers
EVICTIONS = DEFAULT.evictions
MAINTENANCES = DEFAULT.maintenances
AGENTS = DEFAULT.agents
AGENTS_RESTARTING = DEFAULT.agents_restarting
DISRUPTION = DEFAULT.disruption
AGENT_LIVENESS = DEFAULT.agent_liveness
READY = DEFAULT.ready
LEADER = DEFAULT.leader
LEADER_CONFLICT = DEFAULT.leader_conflict
API_VISIBLE = DEFAULT.api_visible
DESIRED_REPLICAS = DEFAULT.desired_replicas
READY_REPLICAS = DEFAULT.ready_replicas
DEPLOYMENT_INFEASIBLE = DEFAULT.deployment_infeasible
MAINTENANCE_PHASE = DEFAULT.maintenance_phase
MAINTENANCE_READY_SINCE = DEFAULT.maintenance_ready_since
DEPLOYMENT = ["namespace", "name"]
MAINTENANCE = ["name", "node"]


def serve_defaults(version: str) -> None:
    """What the exposition says about the process: its version, and no ``_created`` series."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    BUILD.info({"version": version})


def observe_deployment(namespace: str, name: str, desired: int, ready: int, infeasible: bool) -> None:
    DEFAULT.observe_deployment(namespace, name, desired, ready, infeasible)


def forget_deployment(namespace: str, name: str) -> None:
    """A deleted deployment's series go with it."""
    DEFAULT.forget_deployment(namespace, name)


def watch_readiness(ready: Callable[[], bool]) -> None:
    """``egpu_operator_ready`` asks ``ready`` at every scrape, as /readyz would."""
    READY.set_function(lambda: 1 if ready() else 0)


def observe_agents(by_node: Mapping[str, str], states: Iterable[str]) -> None:
    """Each judged node's agent liveness, one of ``states``; a node no longer judged (deleted) loses its series."""
    values = set(states)
    for node, liveness in by_node.items():
        for value in values:
            AGENT_LIVENESS.labels(node, value).set(1 if value == liveness else 0)
    for node in _label_values(AGENT_LIVENESS, "node") - set(by_node):
        for value in values:
            with contextlib.suppress(KeyError):
                AGENT_LIVENESS.remove(node, value)


def observe_maintenance(maintenance: Mapping[str, Any]) -> None:
    """A GPUMaintenance's phase (``Pending`` before the operator wrote one) and, while Ready, since when."""
    name = maintenance["metadata"]["name"]
    node = str((maintenance.get("spec") or {}).get("nodeName", ""))
    status = maintenance.get("status") or {}
    phase = status.get("phase") or "Pending"
    for value in PHASES:
        MAINTENANCE_PHASE.labels(name, node, value).set(1 if value == phase else 0)
    ready_at = _unix_seconds(status.get("readyAt")) if phase == "Ready" else None
    if ready_at is None:
        with contextlib.suppress(KeyError):
            MAINTENANCE_READY_SINCE.remove(name, node)
    else:
        MAINTENANCE_READY_SINCE.labels(name, node).set(ready_at)


def forget_maintenance(name: str, node: str) -> None:
    """A deleted maintenance's series go with it."""
    for value in PHASES:
        with contextlib.suppress(KeyError):
            MAINTENANCE_PHASE.remove(name, node, value)
    with contextlib.suppress(KeyError):
        MAINTENANCE_READY_SINCE.remove(name, node)


def _unix_seconds(rfc3339: object) -> float | None:
    if not isinstance(rfc3339, str):
        return None
    try:
        return timestamps.parse(rfc3339).timestamp()
    except ValueError:
        return None  # not one of ours; the phase series still says Ready


def _label_values(gauge: Gauge, label: str) -> set[str]:
    """The values ``label`` has in the series ``gauge`` holds now (read through the public collect())."""
    samples: Iterable[Any] = (sample for family in gauge.collect() for sample in family.samples)
    return {sample.labels[label] for sample in samples}
