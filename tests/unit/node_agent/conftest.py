from collections.abc import Callable
from pathlib import Path

import pytest

from egpu_api.fleet import load_fleet
from egpu_node_agent.fake_nvml import FakeGpuHost


@pytest.fixture
def fake_host(tmp_path: Path) -> Callable[[str], FakeGpuHost]:
    """Build a fake NVML + sysfs host for a node of the default fleet."""

    def build(name: str) -> FakeGpuHost:
        return FakeGpuHost(load_fleet().node(name), tmp_path / name / "sys")

    return build
