"""Prometheus metrics of the operator.

Per-deployment series carry ``namespace`` and ``name`` (``name`` as kube-state-metrics' ``deployment``),
so an alert names the deployment. ``_created`` series are off (``serve_defaults``).
"""

import contextlib

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
DISRUPTION = Gauge(
    "egpu_operator_fleet_disruption", "1 while most agents look dead at once and nothing is removed", registry=REGISTRY
)
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
