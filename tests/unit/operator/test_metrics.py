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
