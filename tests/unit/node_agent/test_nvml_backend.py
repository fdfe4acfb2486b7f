"""The NVML backend against the fake library: what it calls, what it caches, how it fails."""

from collections.abc import Callable
from pathlib import Path

import pytest

from egpu_api.fleet import load_fleet
from egpu_node_agent.fake_nvml import FakeGpuHost
from egpu_node_agent.nvml import BackendUnavailable, NvmlBackend, PowerLimitError


def test_static_facts_are_cached_between_polls(fake_host: Callable[[str], FakeGpuHost]) -> None:
    host = fake_host("switch-4x-a5000")
    backend = NvmlBackend(host.nvml, host.sysfs_root)
    backend.read(telemetry=False)
    first = host.nvml.calls
    backend.read(telemetry=False)
    steady = host.nvml.calls - first
    assert steady < first / 2, f"a steady poll made {steady} NVML calls, the first {first}"


def test_telemetry_is_only_read_when_asked(fake_host: Callable[[str], FakeGpuHost]) -> None:
    host = fake_host("pi5-rtx4090")
    backend = NvmlBackend(host.nvml, host.sysfs_root)
    quiet = backend.read(telemetry=False)[0]
    assert (quiet.temperature_c, quiet.pcie_tx_kbps, quiet.clock_event_reasons) == (None, None, None)
    loud = backend.read(telemetry=True)[0]
    assert loud.temperature_c == 38
    assert loud.pcie_tx_kbps == 0


def test_power_limit_drift_is_seen_despite_the_cache(fake_host: Callable[[str], FakeGpuHost]) -> None:
    host = fake_host("pi5-rtx4090")
    backend = NvmlBackend(host.nvml, host.sysfs_root)
    backend.set_power_limit(host.nvml.gpus[0].uuid, 300)
    assert backend.read()[0].power.limit_watts == 300  # type: ignore[union-attr]
    host.driver_reload()
    assert backend.read()[0].power.limit_watts == 450  # type: ignore[union-attr]


def test_static_facts_are_reread_after_the_refresh_interval(tmp_path: Path) -> None:
    host = FakeGpuHost(load_fleet().node("pi5-rtx4090"), tmp_path)
    backend = NvmlBackend(host.nvml, host.sysfs_root, static_refresh_s=0)
    backend.read()
    host.nvml.gpus[0].name = "NVIDIA GeForce RTX 4090 D"
    assert backend.read()[0].product == "NVIDIA GeForce RTX 4090 D"


def test_nvml_init_failure_is_one_sentence_with_the_fix(fake_host: Callable[[str], FakeGpuHost]) -> None:
    host = fake_host("pi5-rtx4090")
    host.fail_init()
    with pytest.raises(BackendUnavailable, match=r"NVML could not be initialised \(Driver Not Loaded\).*--backend none"):
        NvmlBackend(host.nvml, host.sysfs_root)


@pytest.mark.parametrize(
    ("code", "message"),
    [(4, "no permission; the agent needs root or CAP_SYS_ADMIN"), (3, "does not support setting a power limit")],
)
def test_refused_power_limits_say_why(fake_host: Callable[[str], FakeGpuHost], code: int, message: str) -> None:
    host = fake_host("x220-tesla-p4")
    host.fail_set_power(0, code)
    backend = NvmlBackend(host.nvml, host.sysfs_root)
    with pytest.raises(PowerLimitError, match=message):
        backend.set_power_limit(host.nvml.gpus[0].uuid, 70)


def test_missing_sysfs_is_reported_not_fatal(fake_host: Callable[[str], FakeGpuHost], tmp_path: Path) -> None:
    host = fake_host("pi5-rtx4090")
    reading = NvmlBackend(host.nvml, tmp_path / "empty").read()[0]
    assert reading.path == ()
    assert "mount the host's /sys into the agent" in reading.extra["sysfs"]
    assert reading.link_current is not None  # NVML's own view still counts
