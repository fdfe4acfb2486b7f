"""Whole-pod fit, with kube-scheduler's NodeResourcesFit and NodeAffinity cases as the reference
(pkg/scheduler/framework/plugins/noderesources/fit_test.go and nodeaffinity's tests)."""

from typing import Any

import pytest

from egpu_operator import fit

GI = 2**30


def container(requests: dict[str, Any] | None = None, limits: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": "c", "resources": {"requests": requests or {}, "limits": limits or {}}, **extra}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"containers": [container()]}, {"pods": 1}, id="no requests: a pod slot only"),
        pytest.param({"containers": [container({"cpu": "1", "memory": "1Gi"}), container({"cpu": "500m", "memory": "512Mi"})]},
                     {"pods": 1, "cpu": 1500, "memory": GI + GI // 2}, id="app containers are summed"),
        pytest.param({"containers": [container(limits={"memory": "12Gi", "nvidia.com/gpu": "1"})]},
                     {"pods": 1, "memory": 12 * GI, "nvidia.com/gpu": 1}, id="a limit without a request is the request"),
        pytest.param({"containers": [container({"cpu": "1"})],
                      "initContainers": [container({"cpu": "3"}), container({"cpu": "2"})]},
                     {"pods": 1, "cpu": 3000}, id="init containers count as their maximum, not their sum"),
        pytest.param({"containers": [container({"cpu": "1"})],
                      "initContainers": [container({"cpu": "1"}, restartPolicy="Always"), container({"cpu": "1500m"})]},
                     {"pods": 1, "cpu": 2500}, id="a restartable sidecar adds to the app and to later init containers"),
        pytest.param({"containers": [container({"cpu": "1"})], "overhead": {"cpu": "250m", "memory": "120Mi"}},
                     {"pods": 1, "cpu": 1250, "memory": 120 * 2**20}, id="pod overhead is added"),
        pytest.param({"containers": [container({"cpu": "1"})], "resources": {"requests": {"cpu": "4"}}},
                     {"pods": 1, "cpu": 4000}, id="pod-level requests win"),
        pytest.param({"containers": [container({"example.com/fpga": "2", "hugepages-2Mi": "4Mi"})]},
                     {"pods": 1, "example.com/fpga": 2, "hugepages-2Mi": 4 * 2**20}, id="extended resources and hugepages"),
    ],
)  # fmt: skip
def test_pod_requests(spec: dict[str, Any], expected: dict[str, int]) -> None:
    assert fit.pod_requests(spec) == expected


ALLOCATABLE = {"pods": 110, "cpu": 4000, "memory": 8 * GI, "ephemeral-storage": 50 * GI, "nvidia.com/gpu": 1}


@pytest.mark.parametrize(
    ("requests", "used", "expected"),
    [
        pytest.param({"pods": 1}, {}, [], id="nothing requested fits"),
        pytest.param({"pods": 1, "memory": 12 * GI}, {"memory": int(1.5 * GI)}, ["memory: needs 12Gi, 6.5Gi free"],
                     id="the Pi's 8Gi cannot hold a 12Gi server"),
        pytest.param({"pods": 1, "cpu": 1_000_000}, {}, ["cpu: needs 1000, 4 free"], id="cpu: 1000"),
        pytest.param({"pods": 1, "cpu": 3000, "memory": 7 * GI}, {"cpu": 2000, "memory": 2 * GI},
                     ["cpu: needs 3, 2 free", "memory: needs 7Gi, 6Gi free"], id="too many resources: every one named"),
        pytest.param({"pods": 1}, {"pods": 110}, ["pods: 110 of 110 allowed already run"], id="a full pod count comes first"),
        pytest.param({"pods": 1, "nvidia.com/gpu": 4}, {}, ["nvidia.com/gpu: needs 4, 1 free"], id="more GPUs than the node has"),
        pytest.param({"pods": 1, "example.com/fpga": 1}, {}, ["example.com/fpga: needs 1, 0 free"],
                     id="a resource the node does not offer"),
        pytest.param({"pods": 1, "example.com/fpga": 0}, {}, [], id="a zero request is not checked"),
        pytest.param({"pods": 1, "memory": 6 * GI}, {"memory": 2 * GI}, [], id="exactly what is free fits"),
    ],
)  # fmt: skip
def test_shortfalls_name_the_resource(requests: dict[str, int], used: dict[str, int], expected: list[str]) -> None:
    assert fit.shortfalls(requests, ALLOCATABLE, used) == expected


LABELS = {"zone": "a", "gpu-gen": "3", "pool": "edge"}


@pytest.mark.parametrize(
    ("spec", "refusal"),
    [
        pytest.param({}, None, id="no constraints"),
        pytest.param({"nodeSelector": {"pool": "edge"}}, None, id="nodeSelector matches"),
        pytest.param({"nodeSelector": {"pool": "core"}}, "template nodeSelector mismatch", id="nodeSelector differs"),
        pytest.param({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
            {"matchExpressions": [{"key": "gpu-gen", "operator": "Gt", "values": ["2"]}]},
        ]}}}}, None, id="terms are ORed"),
        pytest.param({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]},
                                  {"key": "pool", "operator": "NotIn", "values": ["edge"]}]},
        ]}}}}, "template node affinity mismatch", id="expressions of a term are ANDed"),
        pytest.param({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}],
             "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["pi5"]}]},
        ]}}}}, None, id="matchFields on the node name"),
        pytest.param({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{}]}}}}, "template node affinity mismatch", id="an empty term matches nothing"),
        pytest.param({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "gpu-gen", "operator": "Lt", "values": ["x"]}]},
        ]}}}}, "template node affinity mismatch", id="Lt with a value that is no number matches nothing"),
    ],
)  # fmt: skip
def test_node_affinity(spec: dict[str, Any], refusal: str | None) -> None:
    assert fit.node_affinity_refusal(spec, "pi5", LABELS) == refusal


def test_topology_spread_counts_the_replicas_in_each_domain() -> None:
    llm, other = {"matchLabels": {"app": "llm"}}, {"matchLabels": {"app": "other"}}
    spec = {
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": llm},
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": llm},
            {"maxSkew": 1, "topologyKey": "rack", "labelSelector": other},
        ]
    }
    constraints = fit.spread_constraints(spec, {"app": "llm"})
    assert constraints == [("zone", 1)]  # ScheduleAnyway and selectors that miss the replicas are left to the scheduler
    domains = {"zone": {"a": 1, "b": 0}}
    assert fit.spread_refusal(constraints, {"zone": "a"}, domains) == "topology spread: zone=a would have skew 2 > maxSkew 1"
    assert fit.spread_refusal(constraints, {"zone": "b"}, domains) is None
    assert fit.spread_refusal(constraints, {}, domains) == "no zone label (topology spread)"
