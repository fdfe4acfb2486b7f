"""The agent's poll loop against its seams' fakes: ``FakePublisher`` for the API server, fake NVML and
sysfs for the GPUs. What it writes, when it writes nothing, and how it lives through failures."""

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from egpu_api import keys
from egpu_api.power import parse_status
from egpu_node_agent.agent import AgentConfig, NodeAgent
from egpu_node_agent.fake_nvml import FakeGpuHost
from egpu_node_agent.fake_publisher import Condition, FakePublisher
from egpu_node_agent.metrics import AgentMetrics
from egpu_node_agent.nvml import NvmlBackend
from egpu_node_agent.readings import GpuReading

NODE = "switch-4x-a5000"


@dataclass
class Rig:
    agent: NodeAgent
    publisher: FakePublisher
    host: FakeGpuHost
    metrics: AgentMetrics

    def errors(self, kind: str) -> float:
        value = self.metrics.registry.get_sample_value("egpu_node_agent_errors_total", {"node": NODE, "kind": kind})
        return value or 0.0

    def uuid(self, index: int = 0) -> str:
        return self.host.node.gpu_uuid(index)


@pytest.fixture
def rig(fake_host: Callable[[str], FakeGpuHost]) -> Rig:
    host = fake_host(NODE)
    publisher = FakePublisher(NODE)
    metrics = AgentMetrics()
    # lease_duration_s=0: every poll is due a renewal, so each poll's renewal (or its absence) shows.
    config = AgentConfig(NODE, poll_interval_s=0, min_poll_gap_s=0, lease_duration_s=0)
    return Rig(NodeAgent(config, NvmlBackend(host.nvml, host.sysfs_root), publisher, metrics), publisher, host, metrics)


def test_the_first_poll_publishes_the_labels_the_condition_and_the_lease(rig: Rig) -> None:
    rig.agent.poll()
    labels = rig.publisher.node_labels
    assert labels[keys.GPU_COUNT_LABEL] == "4"
    assert labels[keys.HEALTH_LABEL] == "ok"
    assert labels[keys.PCIE_GENERATION_LABEL] == "3"
    assert labels[keys.PCIE_WIDTH_LABEL] == "1", "the x1 uplink is what a load sees"
    gpus = json.loads(rig.publisher.node_annotations[keys.GPUS_ANNOTATION])
    assert [gpu["uuid"] for gpu in gpus] == [rig.uuid(i) for i in range(4)]
    assert len(rig.publisher.writes) == 1, "labels and annotations in one patch"
    assert rig.publisher.condition == Condition("True", "AllGPUsHealthy", "4 GPU(s) healthy")
    assert rig.publisher.heartbeats == [0]


def test_unchanged_readings_write_nothing_but_the_lease(rig: Rig) -> None:
    rig.agent.poll()
    patches = rig.publisher.patches
    for _ in range(3):
        rig.agent.poll()
    assert rig.publisher.patches == patches, "a steady node is not patched"
    assert len(rig.publisher.heartbeats) == 4, "the Lease is renewed all the same"
    assert rig.publisher.events == []


def test_a_changed_reading_is_written_once(rig: Rig) -> None:
    rig.agent.poll()
    writes = len(rig.publisher.writes)
    rig.host.lose_gpu(2)
    rig.agent.poll()
    rig.agent.poll()
    assert len(rig.publisher.writes) == writes + 1
    assert rig.publisher.writes[-1]["labels"][keys.HEALTH_LABEL] == "lost"
    assert rig.publisher.condition is not None
    assert rig.publisher.condition.status == "False"
    assert rig.publisher.reasons() == ["GPULost"], "one Event for the transition, not one per poll"


def test_a_power_request_is_applied_and_reported(rig: Rig) -> None:
    rig.agent.poll()
    rig.publisher.request_power(json.dumps({rig.uuid(0): 180}))
    rig.agent.poll()
    assert rig.host.nvml.power_limit_sets == [(rig.uuid(0), 180_000)]
    status = parse_status(rig.publisher.node_annotations[keys.POWER_STATUS_ANNOTATION])
    assert status[rig.uuid(0)].applied_watts == 180
    assert status[rig.uuid(0)].set_by_agent_watts == 180
    gpus = json.loads(rig.publisher.node_annotations[keys.GPUS_ANNOTATION])
    assert gpus[0]["power"]["limitWatts"] == 180, "the limit as NVML reports it after the change"
    rig.agent.poll()
    assert rig.host.nvml.power_limit_sets == [(rig.uuid(0), 180_000)], "applied once, not every poll"


def test_a_power_limit_nvml_refuses_is_reported_not_raised(rig: Rig) -> None:
    rig.host.fail_set_power(0)
    rig.agent.poll()
    rig.publisher.request_power(json.dumps({rig.uuid(0): 180}))
    rig.agent.poll()
    status = parse_status(rig.publisher.node_annotations[keys.POWER_STATUS_ANNOTATION])
    assert status[rig.uuid(0)].error is not None
    assert "no permission" in status[rig.uuid(0)].error
    assert rig.publisher.reasons() == ["PowerLimitFailed"]
    assert rig.errors("PowerLimitError") == 1


def test_gpus_that_cannot_be_read_are_unknown_not_healthy_and_the_loop_goes_on(rig: Rig) -> None:
    rig.agent.poll()
    labels, writes, heartbeats = dict(rig.publisher.node_labels), len(rig.publisher.writes), len(rig.publisher.heartbeats)
    rig.host.unload_driver()
    rig.agent.poll()
    rig.agent.poll()
    condition = rig.publisher.condition
    assert condition is not None
    assert condition.status == "Unknown"
    assert condition.reason == "GPUReadFailed"
    assert "cannot read the GPUs" in condition.message
    assert rig.publisher.node_labels == labels, "not claimed gone: the labels stay as last read"
    assert len(rig.publisher.writes) == writes
    assert len(rig.publisher.heartbeats) == heartbeats, "a blind agent does not vouch for stale labels"
    assert rig.publisher.reasons() == ["GPUReadFailed"], "one Event per failure, not one per poll"
    assert rig.errors("NVMLError") == 2

    rig.host.load_driver()
    rig.agent.poll()
    assert rig.publisher.condition == Condition("True", "AllGPUsHealthy", "4 GPU(s) healthy")
    assert len(rig.publisher.heartbeats) == heartbeats + 1


def test_a_refused_publish_is_logged_retried_and_the_lease_still_renewed(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.publisher.fail("publish")
    rig.agent.poll()
    rig.agent.poll()
    assert rig.publisher.refused == ["publish", "publish"], "each poll tries the patch again"
    assert rig.publisher.node_labels == {}
    assert len(rig.publisher.heartbeats) == 2
    assert rig.publisher.condition is not None, "the other writes go ahead"
    assert rig.errors("ApiException") == 2
    assert any(record.getMessage() == "write failed; retried next poll" for record in caplog.records)

    rig.publisher.recover()
    rig.agent.poll()
    assert rig.publisher.node_labels[keys.HEALTH_LABEL] == "ok"
    assert len(rig.publisher.writes) == 1


def test_a_refused_lease_renewal_is_retried_on_the_next_poll(rig: Rig) -> None:
    rig.publisher.fail("heartbeat")
    with pytest.raises(Exception, match="Service Unavailable"):
        rig.agent.poll()
    assert rig.publisher.node_labels[keys.HEALTH_LABEL] == "ok", "published before the renewal failed"
    rig.publisher.recover()
    rig.agent.poll()
    assert rig.publisher.heartbeats == [0]


class StopAfter:
    """A ``GpuBackend`` that sets ``stop`` (and wakes the loop, as the agent's owner does) after ``reads``
    reads, raising on the reads listed in ``failing``."""

    def __init__(self, inner: NvmlBackend, stop: threading.Event, wake: threading.Event, reads: int, failing: set[int]) -> None:
        self.inner, self.stop, self.wake, self.left, self.failing = inner, stop, wake, reads, failing
        self.reads = 0

    def read(self, telemetry: bool = True) -> list[GpuReading]:
        self.reads += 1
        if self.reads >= self.left:
            self.stop.set()
            self.wake.set()
        if self.reads in self.failing:
            raise RuntimeError("a bug in a backend")
        return self.inner.read(telemetry)

    def set_power_limit(self, uuid: str, watts: int) -> None:
        self.inner.set_power_limit(uuid, watts)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("failing", [set(), {1, 2}])
def test_run_polls_until_stopped_and_a_failing_poll_does_not_end_it(rig: Rig, failing: set[int]) -> None:
    stop = threading.Event()
    backend = StopAfter(NvmlBackend(rig.host.nvml, rig.host.sysfs_root), stop, rig.publisher.changed, 3, failing)
    rig.agent.backend = backend
    rig.agent.run(stop)  # returns: the loop ends once stop is set
    assert backend.reads == 3
    assert len(rig.publisher.heartbeats) == 3 - len(failing), "the polls whose read failed renew no Lease"


def test_run_with_stop_already_set_polls_nothing(rig: Rig) -> None:
    stop = threading.Event()
    stop.set()
    rig.agent.run(stop)
    assert rig.publisher.patches == 0
    assert rig.publisher.heartbeats == []
