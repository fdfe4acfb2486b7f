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

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
PlatformCollector(registry=REGISTRY)
BUILD = Info("egpu_operator_build", "Version of the operator", registry=REGISTRY)
RECONCILES = Counter("egpu_operator_reconciles", "Reconciles of InferenceDeployments", ["result"], registry=REGISTRY)
PLACEMENT_SECONDS = Histogram(
    "egpu_operator_placement_seconds",
    "Time to compute one deployment's placement",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
    registry=REGISTRY,
)
INFEASIBLE = Gauge("egpu_operator_infeasible_deployments", "Deployments with replicas that cannot be placed", registry=REGISTRY)
ERRORS = Counter("egpu_operator_errors", "Errors by kind", ["kind"], registry=REGISTRY)
API_REQUESTS = Counter("egpu_operator_api_requests", "Requests the operator sent to the API server", ["verb"], registry=REGISTRY)
TRIGGERS = Counter("egpu_operator_triggers", "Reasons a deployment was put on the work queue", ["source"], registry=REGISTRY)
EVICTIONS = Counter(
    "egpu_operator_evictions", "Evictions requested, by who asked and the answer", ["by", "result"], registry=REGISTRY
)
MAINTENANCES = Gauge("egpu_operator_gpu_maintenances", "GPUMaintenances by phase", ["phase"], registry=REGISTRY)
AGENTS = Gauge(
    "egpu_operator_node_agents", "Node agents by judged liveness (alive, unknown, dead)", ["liveness"], registry=REGISTRY
)
AGENTS_RESTARTING = Gauge(
    "egpu_operator_node_agents_restarting",
    "Silent node agents held unknown, not dead, because their pod is being replaced or starting",
    registry=REGISTRY,
)
DISRUPTION = Gauge(
    "egpu_operator_fleet_disruption", "1 while most agents look dead at once and nothing is removed", registry=REGISTRY
)
AGENT_LIVENESS = Gauge(
    "egpu_operator_node_agent_liveness",
    "1 for the judged liveness (alive, unknown, dead) of a node's agent, 0 for the others",
    ["node", "liveness"],
    registry=REGISTRY,
)
READY = Gauge("egpu_operator_ready", "1 while the operator's /readyz answers 200 (its first listings are in)", registry=REGISTRY)
LEADER = Gauge("egpu_operator_leader", "1 while this replica holds the leader Lease and acts, else 0", registry=REGISTRY)
LEADER_CONFLICT = Gauge(
    "egpu_operator_leader_conflict",
    "1 while another release's operator holds the cluster and this one refuses to act",
    registry=REGISTRY,
)
API_VISIBLE = Gauge("egpu_operator_api_server_ready", "1 while the API server's /readyz answers", registry=REGISTRY)
DEPLOYMENT = ["namespace", "name"]
DESIRED_REPLICAS = Gauge(
    "egpu_operator_deployment_replicas_desired", "spec.replicas of an InferenceDeployment", DEPLOYMENT, registry=REGISTRY
)
READY_REPLICAS = Gauge(
    "egpu_operator_deployment_replicas_ready", "Ready replica pods of an InferenceDeployment", DEPLOYMENT, registry=REGISTRY
)
DEPLOYMENT_INFEASIBLE = Gauge(
    "egpu_operator_deployment_infeasible",
    "1 while an InferenceDeployment has replicas no node can take (or pods the API server refused), else 0",
    DEPLOYMENT,
    registry=REGISTRY,
)
MAINTENANCE = ["name", "node"]
MAINTENANCE_PHASE = Gauge(
    "egpu_operator_gpu_maintenance_phase",
    "1 for the phase a GPUMaintenance is in, 0 for the other phases",
    [*MAINTENANCE, "phase"],
    registry=REGISTRY,
)
MAINTENANCE_READY_SINCE = Gauge(
    "egpu_operator_gpu_maintenance_ready_timestamp_seconds",
    "While a GPUMaintenance is Ready (its node cordoned and free of GPU work): its status.readyAt, in Unix seconds",
    MAINTENANCE,
    registry=REGISTRY,
)


def serve_defaults(version: str) -> None:
    """What the exposition says about the process: its version, and no ``_created`` series."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    BUILD.info({"version": version})


def observe_deployment(namespace: str, name: str, desired: int, ready: int, infeasible: bool) -> None:
    DESIRED_REPLICAS.labels(namespace, name).set(desired)
    READY_REPLICAS.labels(namespace, name).set(ready)
    DEPLOYMENT_INFEASIBLE.labels(namespace, name).set(1 if infeasible else 0)


def forget_deployment(namespace: str, name: str) -> None:
    """A deleted deployment's series go with it."""
    for gauge in (DESIRED_REPLICAS, READY_REPLICAS, DEPLOYMENT_INFEASIBLE):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)


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
