"""GPU assignments: the simulated device plugin of KWOK nodes, and what the agent publishes of them."""

import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from egpu_api.assignments import dump_assignments, gpu_uuid, parse_assignments
from egpu_api.fleet import load_fleet
from egpu_node_agent.agent import AgentConfig, NodeAgent
from egpu_node_agent.assignments import SimulatedAssigner, gpu_count, simulated_devices
from egpu_node_agent.fake_nvml import FakeGpuHost
from egpu_node_agent.fake_publisher import FakePublisher
from egpu_node_agent.metrics import AgentMetrics
from egpu_node_agent.nvml import NvmlBackend

ASSIGNMENTS = "egpu-operator.io/gpu-assignments"


def gpu_pod(name: str, gpus: int = 1, created: str = "2026-01-01T00:00:00Z", uid: str = "", phase: str = "Running",
            namespace: str = "ai") -> dict[str, Any]:  # fmt: skip
    container = {"name": "c", "resources": {"limits": {"nvidia.com/gpu": str(gpus)} if gpus else {}}}
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": uid or f"uid-{name}", "creationTimestamp": created},
        "spec": {"containers": [container]},
        "status": {"phase": phase},
    }


# -- the contract ------------------------------------------------------------------------------


def test_dump_is_canonical_so_an_unchanged_assignment_is_an_unchanged_string() -> None:
    assert dump_assignments({"b/p": ["GPU-2", "GPU-1", "GPU-1"], "a/p": ["GPU-3"]}) == '{"a/p":["GPU-3"],"b/p":["GPU-1","GPU-2"]}'
    assert dump_assignments({}) == "{}"


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        (None, None),
        ("", None),
        ("{}", {}),
        ('{"ai/a":["GPU-1"]}', {"ai/a": ("GPU-1",)}),
        ("not json", None),
        ('["GPU-1"]', None),
        ('{"ai/a":"GPU-1"}', None),
        ('{"ai/a":[1]}', None),
    ],
)
def test_parse_reads_only_well_formed_annotations(text: str | None, parsed: dict[str, tuple[str, ...]] | None) -> None:
    assert parse_assignments(text) == parsed


@pytest.mark.parametrize(
    ("device_id", "uuid"), [("GPU-a", "GPU-a"), ("GPU-a::0", "GPU-a"), ("GPU-a::12", "GPU-a"), ("MIG-b", "MIG-b")]
)
def test_a_device_id_names_its_gpu(device_id: str, uuid: str) -> None:
    assert gpu_uuid(device_id) == uuid


# -- the simulated device plugin ---------------------------------------------------------------


def test_simulated_devices_are_one_per_unit_the_plugin_advertises() -> None:
    fleet = load_fleet()
    switch = fleet.node("switch-4x-a5000")
    assert simulated_devices(switch) == [switch.gpu_uuid(i) for i in range(4)]
    sliced = fleet.node("pi5-rtx4090").model_copy(update={"time_slicing_replicas": 3})
    uuid = sliced.gpu_uuid(0)
    assert simulated_devices(sliced) == [f"{uuid}::0", f"{uuid}::1", f"{uuid}::2"]
    mig = fleet.node("server-a100-mig")
    assert len(simulated_devices(mig)) == mig.gpu_units
    assert {gpu_uuid(device) for device in simulated_devices(mig)} == {mig.gpu_uuid(0)}


@pytest.mark.parametrize(
    ("pod", "count"),
    [
        (gpu_pod("a", 1), 1),
        (gpu_pod("a", 2), 2),
        (gpu_pod("a", 0), 0),
        (
            {
                "spec": {
                    "containers": [
                        {"resources": {"limits": {"nvidia.com/gpu": "x"}}},
                        {"resources": {"limits": {"nvidia.com/gpu": 1}}},
                    ]
                }
            },
            1,
        ),
        ({}, 0),
    ],
)
def test_gpu_count_sums_the_containers_limits(pod: Mapping[str, Any], count: int) -> None:
    assert gpu_count(pod) == count


def assigner(devices: list[str]) -> tuple[SimulatedAssigner, list[dict[str, Any]]]:
    pods: list[dict[str, Any]] = []
    return SimulatedAssigner(devices, lambda: list(pods)), pods


# Each case: the pods on the node poll after poll, and what is assigned after each poll.
CASES: list[tuple[str, list[str], list[list[dict[str, Any]]], list[dict[str, list[str]]]]] = [
    ("lowest free index first, oldest pod first",
     ["GPU-0", "GPU-1", "GPU-2"],
     [[gpu_pod("b", created="2026-01-01T00:00:02Z"), gpu_pod("a", created="2026-01-01T00:00:01Z")]],
     [{"ai/a": ["GPU-0"], "ai/b": ["GPU-1"]}]),
    ("a pod keeps its GPU when an older one leaves, and the freed GPU goes to the next",
     ["GPU-0", "GPU-1", "GPU-2"],
     [[gpu_pod("a"), gpu_pod("b", created="2026-01-01T00:00:05Z")],
      [gpu_pod("b", created="2026-01-01T00:00:05Z")],
      [gpu_pod("b", created="2026-01-01T00:00:05Z"), gpu_pod("c", created="2026-01-01T00:00:09Z")]],
     [{"ai/a": ["GPU-0"], "ai/b": ["GPU-1"]}, {"ai/b": ["GPU-1"]}, {"ai/b": ["GPU-1"], "ai/c": ["GPU-0"]}]),
    ("a pod of two GPUs gets the two lowest free",
     ["GPU-0", "GPU-1", "GPU-2"],
     [[gpu_pod("a"), gpu_pod("b", 2, created="2026-01-01T00:00:05Z")]],
     [{"ai/a": ["GPU-0"], "ai/b": ["GPU-1", "GPU-2"]}]),
    ("pods without GPUs, finished pods and pods beyond the node's devices get none",
     ["GPU-0"],
     [[gpu_pod("a"), gpu_pod("web", 0), gpu_pod("done", phase="Succeeded"), gpu_pod("late", created="2026-01-01T00:00:09Z")]],
     [{"ai/a": ["GPU-0"]}]),
    ("a pod recreated under the same name is a new pod",
     ["GPU-0", "GPU-1"],
     [[gpu_pod("b", created="2026-01-01T00:00:05Z"), gpu_pod("a", uid="first", created="2026-01-01T00:00:09Z")],
      [gpu_pod("a", uid="second", created="2026-01-01T00:00:01Z")]],
     [{"ai/a": ["GPU-1"], "ai/b": ["GPU-0"]}, {"ai/a": ["GPU-0"]}]),
    ("time-slicing replicas fill a GPU's slots before the next GPU's",
     ["GPU-0::0", "GPU-0::1", "GPU-1::0", "GPU-1::1"],
     [[gpu_pod(name, created=f"2026-01-01T00:00:0{i}Z") for i, name in enumerate("abc")]],
     [{"ai/a": ["GPU-0"], "ai/b": ["GPU-0"], "ai/c": ["GPU-1"]}]),
    ("the same name in two namespaces is two pods",
     ["GPU-0", "GPU-1"],
     [[gpu_pod("a", namespace="x"), gpu_pod("a", namespace="y", created="2026-01-01T00:00:05Z")]],
     [{"x/a": ["GPU-0"], "y/a": ["GPU-1"]}]),
]  # fmt: skip


@pytest.mark.parametrize(("devices", "polls", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_simulated_assigner(devices: list[str], polls: list[list[dict[str, Any]]], expected: list[dict[str, list[str]]]) -> None:
    source, pods = assigner(devices)
    for on_node, wanted in zip(polls, expected, strict=True):
        pods[:] = on_node
        assert source.assignments() == wanted
        assert source.assignments() == wanted, "stable across polls"


def test_assignments_are_unknown_when_the_pods_cannot_be_listed() -> None:
    def broken() -> list[dict[str, Any]]:
        raise ConnectionError("API server gone")

    assert SimulatedAssigner(["GPU-0"], broken).assignments() is None


# -- the agent publishes them ------------------------------------------------------------------


class Answers:
    def __init__(self, *answers: dict[str, list[str]] | Exception | None) -> None:
        self.answers = list(answers)

    def assignments(self) -> dict[str, list[str]] | None:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def agent(fake_host: Callable[[str], FakeGpuHost]) -> Callable[[Answers | None], tuple[NodeAgent, FakePublisher]]:
    def build(source: Answers | None) -> tuple[NodeAgent, FakePublisher]:
        host = fake_host("switch-4x-a5000")
        publisher = FakePublisher()
        node_agent = NodeAgent(
            AgentConfig("switch-4x-a5000"), NvmlBackend(host.nvml, host.sysfs_root), publisher,
            AgentMetrics(), assignments=source,
        )  # fmt: skip
        return node_agent, publisher

    return build


def test_the_agent_publishes_assignments_once_and_keeps_them_while_unknown(agent: Callable[..., Any]) -> None:
    node_agent, publisher = agent(
        Answers({"ai/b": ["GPU-2", "GPU-1"]}, {"ai/b": ["GPU-1", "GPU-2"]}, None, RuntimeError("bug"), {})
    )
    node_agent.poll()
    assert json.loads(publisher.node_annotations[ASSIGNMENTS]) == {"ai/b": ["GPU-1", "GPU-2"]}
    writes = len(publisher.writes)
    node_agent.poll()  # the same assignment in another order: no patch
    node_agent.poll()  # unknown: what was published stays
    node_agent.poll()  # a source that raises: the poll goes on, the annotation stays
    assert len(publisher.writes) == writes
    assert json.loads(publisher.node_annotations[ASSIGNMENTS]) == {"ai/b": ["GPU-1", "GPU-2"]}
    node_agent.poll()  # the pod left
    assert publisher.node_annotations[ASSIGNMENTS] == "{}"


def test_an_agent_that_cannot_tell_publishes_no_assignments(agent: Callable[..., Any]) -> None:
    node_agent, publisher = agent(Answers(None))
    node_agent.poll()
    assert "egpu-operator.io/gpus" in publisher.node_annotations
    assert ASSIGNMENTS not in publisher.node_annotations


def test_an_agent_told_not_to_ask_removes_what_an_earlier_run_published(agent: Callable[..., Any]) -> None:
    node_agent, publisher = agent(None)
    publisher.node_annotations[ASSIGNMENTS] = '{"ai/a":["GPU-1"]}'
    node_agent.poll()
    assert ASSIGNMENTS not in publisher.node_annotations
