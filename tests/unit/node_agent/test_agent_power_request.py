"""A malformed power-limit request: every limit kept, and one Event each time the value changes."""

import json
from collections.abc import Callable

import pytest

from egpu_api import keys
from egpu_node_agent.agent import AgentConfig, NodeAgent
from egpu_node_agent.fake_nvml import FakeGpuHost
from egpu_node_agent.fake_publisher import FakePublisher
from egpu_node_agent.metrics import AgentMetrics
from egpu_node_agent.nvml import NvmlBackend

NODE = "switch-4x-a5000"


@pytest.fixture
def agent(fake_host: Callable[[str], FakeGpuHost]) -> tuple[NodeAgent, FakePublisher, FakeGpuHost]:
    host = fake_host(NODE)
    publisher = FakePublisher(NODE)
    node_agent = NodeAgent(AgentConfig(NODE), NvmlBackend(host.nvml, host.sysfs_root), publisher, AgentMetrics())
    return node_agent, publisher, host


def limit_watts(host: FakeGpuHost) -> int:
    power = host.nvml.gpus[0].power_mw
    assert power is not None
    return power[0] // 1000


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("-5", 'GPU "{uuid}": -5 is not a whole number of watts above 0'),
        ("0", 'GPU "{uuid}": 0 is not a whole number of watts above 0'),
        ("65.5", 'GPU "{uuid}": 65.5 is not a whole number of watts above 0'),
        ("[180]", 'GPU "{uuid}": [180] is not a whole number of watts above 0'),
        ('"65W"', 'GPU "{uuid}": "65W" is not a whole number of watts above 0'),
        ("null", 'GPU "{uuid}": null is not a whole number of watts above 0'),
        ('"180"', 'GPU "{uuid}": "180" is not a whole number of watts above 0'),
    ],
)
def test_a_malformed_request_keeps_the_limit_and_says_why(
    agent: tuple[NodeAgent, FakePublisher, FakeGpuHost], value: str, problem: str
) -> None:
    node_agent, publisher, host = agent
    node_agent.poll()
    uuid = json.loads(publisher.node_annotations[keys.GPUS_ANNOTATION])[0]["uuid"]
    publisher.node_annotations[keys.POWER_REQUEST_ANNOTATION] = json.dumps({uuid: 180})
    node_agent.poll()
    assert limit_watts(host) == 180
    status = publisher.node_annotations[keys.POWER_STATUS_ANNOTATION]

    publisher.node_annotations[keys.POWER_REQUEST_ANNOTATION] = f'{{"{uuid}": {value}}}'
    for _ in range(3):
        node_agent.poll()
    assert limit_watts(host) == 180, "kept, not reverted to the 230 W default"
    assert publisher.node_annotations[keys.POWER_STATUS_ANNOTATION] == status, "the status still says whose limit it is"
    assert [(event.reason, event.message) for event in publisher.events] == [
        (
            "InvalidPowerRequest",
            'annotation egpu-operator.io/power-limit-request must be JSON like {"GPU-<uuid>": 200}, whole watts above 0 '
            f"for each GPU; {problem.format(uuid=uuid)}; the current power limits are kept until it is fixed",
        )
    ], "one Event for the value, not one per poll"


def test_each_new_bad_value_is_reported_and_a_fixed_one_applies(agent: tuple[NodeAgent, FakePublisher, FakeGpuHost]) -> None:
    node_agent, publisher, host = agent
    node_agent.poll()
    uuid = json.loads(publisher.node_annotations[keys.GPUS_ANNOTATION])[0]["uuid"]
    values = ["-5", '"65W"', "-5", f'{{"{uuid}": 150}}', "-5"]
    for value in values:
        publisher.node_annotations[keys.POWER_REQUEST_ANNOTATION] = value
        node_agent.poll()
        node_agent.poll()
    # -5 is reported each time it comes back after another value, not once per process.
    assert publisher.reasons() == ["InvalidPowerRequest"] * 4
    assert limit_watts(host) == 150, "the fixed request applied, then kept through the bad one"
