"""The operator's exposition, asserted literally: per-deployment series named by namespace and name."""

from typing import Any

import pytest
from prometheus_client import generate_latest

from egpu_operator import metrics
from egpu_operator.metrics import REGISTRY
from tests.unit.operator.cluster import NAMESPACE, Cluster, deployment


@pytest.fixture
def cluster(nodes: dict[str, Any]) -> Cluster:
    return Cluster(nodes)


def exposition() -> str:
    return generate_latest(REGISTRY).decode()


def test_ready_desired_and_infeasible_per_deployment(cluster: Cluster) -> None:
    cluster.kube.add_deployment(deployment("metered", replicas=2))
    cluster.reconcile("metered")
    series = f'{{name="metered",namespace="{NAMESPACE}"}}'
    assert f"egpu_operator_deployment_replicas_desired{series} 2.0" in exposition()
    assert f"egpu_operator_deployment_replicas_ready{series} 0.0" in exposition()
    assert f"egpu_operator_deployment_infeasible{series} 0.0" in exposition()
    cluster.kube.schedule()
    cluster.reconcile("metered")
    assert f"egpu_operator_deployment_replicas_ready{series} 2.0" in exposition()

    cluster.kube.add_deployment(deployment("too-big", model={"name": "huge", "size": "140G"}))
    cluster.reconcile("too-big")
    assert f'egpu_operator_deployment_infeasible{{name="too-big",namespace="{NAMESPACE}"}} 1.0' in exposition()

    metrics.forget_deployment(NAMESPACE, "metered")
    metrics.forget_deployment(NAMESPACE, "metered")  # twice is fine
    assert 'name="metered"' not in exposition()


def test_build_info_process_metrics_and_no_created_series() -> None:
    metrics.serve_defaults("1.2.3")
    text = exposition()
    assert 'egpu_operator_build_info{version="1.2.3"} 1.0' in text
    assert "process_resident_memory_bytes " in text
    assert "process_cpu_seconds_total " in text
    assert "egpu_operator_reconciles_total" in text
    assert "_created" not in text


def maintenance(name: str, node: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"nodeName": node, "reason": "reseat"}, "status": status}


def test_a_maintenance_exports_its_phase_by_name_and_node_and_since_when_it_is_ready() -> None:
    metrics.observe_maintenance({"metadata": {"name": "reseat-a"}, "spec": {"nodeName": "pi5-a"}})
    series = 'name="reseat-a",node="pi5-a"'
    assert f'egpu_operator_gpu_maintenance_phase{{{series},phase="Pending"}} 1.0' in exposition()
    assert f'egpu_operator_gpu_maintenance_phase{{{series},phase="Ready"}} 0.0' in exposition()
    assert "egpu_operator_gpu_maintenance_ready_timestamp_seconds{" not in exposition()

    metrics.observe_maintenance(maintenance("reseat-a", "pi5-a", phase="Ready", readyAt="2026-12-04T12:00:00Z"))
    assert f'egpu_operator_gpu_maintenance_phase{{{series},phase="Pending"}} 0.0' in exposition()
    assert f'egpu_operator_gpu_maintenance_phase{{{series},phase="Ready"}} 1.0' in exposition()
    assert f"egpu_operator_gpu_maintenance_ready_timestamp_seconds{{{series}}} 1.7963856e+09" in exposition()

    # Completed keeps readyAt in its status; the node is back in service, so the timestamp goes.
    metrics.observe_maintenance(maintenance("reseat-a", "pi5-a", phase="Completed", readyAt="2026-12-04T12:00:00Z"))
    assert f'egpu_operator_gpu_maintenance_phase{{{series},phase="Completed"}} 1.0' in exposition()
    assert "egpu_operator_gpu_maintenance_ready_timestamp_seconds{" not in exposition()

    metrics.observe_maintenance(maintenance("reseat-b", "pi5-b", phase="Failed"))
    metrics.forget_maintenance("reseat-a", "pi5-a")
    metrics.forget_maintenance("reseat-a", "pi5-a")  # twice is fine
    assert 'name="reseat-a"' not in exposition()
    assert 'egpu_operator_gpu_maintenance_phase{name="reseat-b",node="pi5-b",phase="Failed"} 1.0' in exposition()
    metrics.forget_maintenance("reseat-b", "pi5-b")


def test_a_ready_maintenance_with_an_unreadable_ready_at_has_no_timestamp() -> None:
    metrics.observe_maintenance(maintenance("odd", "pi5-c", phase="Ready", readyAt="yesterday"))
    assert 'egpu_operator_gpu_maintenance_phase{name="odd",node="pi5-c",phase="Ready"} 1.0' in exposition()
    assert "egpu_operator_gpu_maintenance_ready_timestamp_seconds{" not in exposition()
    metrics.forget_maintenance("odd", "pi5-c")


def test_agent_liveness_per_node_and_a_node_no_longer_judged_loses_its_series() -> None:
    states = ["alive", "unknown", "dead"]
    metrics.observe_agents({"pi5-a": "alive", "pi5-b": "dead"}, states)
    assert 'egpu_operator_node_agent_liveness{liveness="dead",node="pi5-b"} 1.0' in exposition()
    assert 'egpu_operator_node_agent_liveness{liveness="alive",node="pi5-b"} 0.0' in exposition()
    assert 'egpu_operator_node_agent_liveness{liveness="alive",node="pi5-a"} 1.0' in exposition()
    metrics.observe_agents({"pi5-a": "unknown"}, states)
    assert 'node="pi5-b"' not in exposition()
    assert 'egpu_operator_node_agent_liveness{liveness="unknown",node="pi5-a"} 1.0' in exposition()
    metrics.observe_agents({}, states)
    assert "egpu_operator_node_agent_liveness{" not in exposition()


def test_ready_follows_readyz_at_every_scrape() -> None:
    answers = [False]
    metrics.watch_readiness(lambda: answers[-1])
    assert "egpu_operator_ready 0.0" in exposition()
    answers.append(True)
    assert "egpu_operator_ready 1.0" in exposition()
