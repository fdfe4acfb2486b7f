"""Prometheus metrics of the operator."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()
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
API_VISIBLE = Gauge("egpu_operator_api_server_ready", "1 while the API server's /readyz answers", registry=REGISTRY)
