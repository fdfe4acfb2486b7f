"""Read GPUs through an NVML-shaped library: pynvml on real hardware, ``fake_nvml`` in tests.

The backend calls the library by NVML's own function names, so the fake answers the same
calls and tests run this code path, not a parallel one. This is the only module that
imports pynvml (in ``load_pynvml``).

Contract of ``GpuBackend`` (what the agent relies on):
- ``read(telemetry)`` returns one ``GpuReading`` per GPU, in NVML index order, and never raises for a
  single GPU's trouble: a GPU that fell off the bus (NVML_ERROR_GPU_IS_LOST, Xid 79) or that
  vanished since the last read is returned with ``health="lost"``; a value NVML does not
  support on this GPU is None. Without ``telemetry`` the volatile metrics-only values
  (temperature, power draw, PCIe throughput, replays, clock events) are None.
- ``set_power_limit(uuid, watts)`` applies a limit NVML accepts or raises ``PowerLimitError``
  with a sentence for an event; it never clamps (the caller does, against the reading).
- ``close()`` releases the library.
"""

import contextlib
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from egpu_api.pcie import LinkSpeed
from egpu_node_agent import sysfs
from egpu_node_agent.readings import GpuReading, MigInstance, PowerReading, VirtualizationMode

# NVML's numeric codes, the same in pynvml and the fake.
ERROR_NOT_SUPPORTED = 3
ERROR_NO_PERMISSION = 4
ERROR_GPU_IS_LOST = 15
_VIRTUALIZATION_MODES: dict[int, VirtualizationMode] = {0: "none", 1: "passthrough", 2: "vgpu-guest", 3: "vgpu-host"}
_TEMPERATURE_GPU = 0
_PCIE_UTIL_TX_BYTES, _PCIE_UTIL_RX_BYTES = 0, 1


class BackendUnavailable(Exception):
    """NVML cannot be used at all (no driver, no library, no permission); the message is for the user."""


class PowerLimitError(Exception):
    """NVML refused a power limit; the message says why and what would fix it."""


class GpuBackend(Protocol):
    def read(self, telemetry: bool = True) -> list[GpuReading]: ...

    def set_power_limit(self, uuid: str, watts: int) -> None: ...

    def close(self) -> None: ...


def load_pynvml() -> Any:
    """Import pynvml; raise ``BackendUnavailable`` in one sentence if it or the driver is missing."""
    try:
        import pynvml
    except ImportError as error:
        raise BackendUnavailable(f"the Python package nvidia-ml-py is not installed ({error})") from None
    return pynvml


class NvmlBackend:
    """``GpuBackend`` over an NVML-shaped library."""

    def __init__(self, lib: Any, sysfs_root: Path = Path("/sys"), static_refresh_s: float = 60.0) -> None:
        self._lib = lib
        self._sysfs_root = sysfs_root
        self._static_refresh_s = static_refresh_s
        self._static: dict[int, _StaticFacts] = {}
        # The last good reading per index, so a GPU that vanishes is reported lost, not forgotten.
        self._known: dict[int, GpuReading] = {}
        try:
            lib.nvmlInit()
        except lib.NVMLError as error:
            raise BackendUnavailable(
                f"NVML could not be initialised ({error}); is the NVIDIA driver loaded and /dev/nvidia* "
                "visible to the agent? To run without GPUs, use --backend none"
            ) from None

    def close(self) -> None:
        with contextlib.suppress(self._lib.NVMLError):  # shutting down anyway
            self._lib.nvmlShutdown()

    def read(self, telemetry: bool = True) -> list[GpuReading]:
        lib = self._lib
        count = lib.nvmlDeviceGetCount()
        readings = [self._read_index(index, telemetry) for index in range(count)]
        for index in sorted(self._known):
            if index >= count:  # fell off the bus so hard the driver no longer counts it
                readings.append(_lost(self._known[index], "device vanished from NVML"))
        for reading in readings:
            if reading.health != "lost":
                self._known[reading.index] = reading
        return readings

    def set_power_limit(self, uuid: str, watts: int) -> None:
        lib = self._lib
        try:
            handle = lib.nvmlDeviceGetHandleByUUID(uuid)
            lib.nvmlDeviceSetPowerManagementLimit(handle, watts * 1000)
        except lib.NVMLError as error:
            code = getattr(error, "value", None)
            if code == ERROR_NO_PERMISSION:
                raise PowerLimitError(
                    f"NVML refused to set {watts} W on {uuid}: no permission; the agent needs root or "
                    "CAP_SYS_ADMIN (enable power actuation in the chart)"
                ) from None
            if code == ERROR_NOT_SUPPORTED:
                raise PowerLimitError(f"{uuid} does not support setting a power limit (vGPU guest?)") from None
            raise PowerLimitError(f"NVML refused to set {watts} W on {uuid}: {error}") from None

    # -- one GPU -------------------------------------------------------------------------------

    def _read_index(self, index: int, telemetry: bool) -> GpuReading:
        lib = self._lib
        try:
            handle = lib.nvmlDeviceGetHandleByIndex(index)
            reading = self._read_handle(index, handle, telemetry)
        except lib.NVMLError as error:
            if getattr(error, "value", None) == ERROR_GPU_IS_LOST and index in self._known:
                self._static.pop(index, None)  # re-read everything once it is back
                return _lost(self._known[index], "NVML reports the GPU is lost (Xid 79, fallen off the bus)")
            if getattr(error, "value", None) == ERROR_GPU_IS_LOST:
                return GpuReading(index, f"unknown-{index}", "unknown", "", 0, "lost", ("GPU lost before first read",))
            raise
        return reading

    def _read_handle(self, index: int, handle: Any, telemetry: bool) -> GpuReading:
        lib = self._lib
        uuid = _text(lib.nvmlDeviceGetUUID(handle))
        facts = self._static_facts(index, handle, uuid)
        limit = self._optional("nvmlDeviceGetPowerManagementLimit", handle) if facts.power is not None else None
        reading = replace(
            facts.template,
            link_current=self._link(handle, "Curr"),
            power=replace(facts.power, limit_watts=limit // 1000) if facts.power is not None and limit is not None else None,
            performance_state=self._optional("nvmlDeviceGetPerformanceState", handle),
        )
        if telemetry:
            reading = self._with_telemetry(reading, handle)
        try:
            return replace(reading, path=sysfs.read_path(reading.pci_bus_id, self._sysfs_root))
        except sysfs.SysfsError as error:
            return replace(reading, extra={"sysfs": str(error)})

    def _static_facts(self, index: int, handle: Any, uuid: str) -> "_StaticFacts":
        """What does not change while the driver runs, re-read every ``static_refresh_s`` or on a new uuid."""
        cached = self._static.get(index)
        now = time.monotonic()
        if cached is not None and cached.template.uuid == uuid and now - cached.read_at < self._static_refresh_s:
            return cached
        lib = self._lib
        template = GpuReading(
            index=index,
            uuid=uuid,
            product=_text(lib.nvmlDeviceGetName(handle)),
            pci_bus_id=sysfs.normalize_bus_id(_text(lib.nvmlDeviceGetPciInfo(handle).busId)),
            memory_mib=int(lib.nvmlDeviceGetMemoryInfo(handle).total) // (1024 * 1024),
            link_max=self._link(handle, "Max"),
            gpu_max_generation=self._optional("nvmlDeviceGetGpuMaxPcieLinkGeneration", handle),
            virtualization_mode=_VIRTUALIZATION_MODES.get(self._optional("nvmlDeviceGetVirtualizationMode", handle) or 0, "none"),
        )
        facts = _StaticFacts(self._with_mig(template, handle), self._power(handle), now)
        self._static[index] = facts
        return facts

    def _with_telemetry(self, reading: GpuReading, handle: Any) -> GpuReading:
        """Volatile readings for metrics. PCIe throughput samples for ~20 ms per call: not every poll."""
        power = reading.power
        usage = self._optional("nvmlDeviceGetPowerUsage", handle) if power is not None else None
        return replace(
            reading,
            power=replace(power, usage_watts=usage / 1000) if power is not None and usage is not None else power,
            temperature_c=self._optional("nvmlDeviceGetTemperature", handle, _TEMPERATURE_GPU),
            clock_event_reasons=self._optional("nvmlDeviceGetCurrentClocksEventReasons", handle),
            pcie_replay_count=self._optional("nvmlDeviceGetPcieReplayCounter", handle),
            pcie_tx_kbps=self._optional("nvmlDeviceGetPcieThroughput", handle, _PCIE_UTIL_TX_BYTES),
            pcie_rx_kbps=self._optional("nvmlDeviceGetPcieThroughput", handle, _PCIE_UTIL_RX_BYTES),
        )

    def _link(self, handle: Any, kind: str) -> LinkSpeed | None:
        generation = self._optional(f"nvmlDeviceGet{kind}PcieLinkGeneration", handle)
        width = self._optional(f"nvmlDeviceGet{kind}PcieLinkWidth", handle)
        if not generation or not width:
            return None
        try:
            LinkSpeed(generation, width).bandwidth_mbps  # noqa: B018 - validates the pair
        except ValueError:
            return None
        return LinkSpeed(generation, width)

    def _power(self, handle: Any) -> PowerReading | None:
        """Default and constraints (static); the current limit is filled in on every read."""
        default = self._optional("nvmlDeviceGetPowerManagementDefaultLimit", handle)
        constraints = self._optional("nvmlDeviceGetPowerManagementLimitConstraints", handle)
        if default is None or constraints is None:
            return None
        return PowerReading(
            limit_watts=default // 1000,
            default_limit_watts=default // 1000,
            min_limit_watts=constraints[0] // 1000,
            max_limit_watts=constraints[1] // 1000,
        )

    def _with_mig(self, reading: GpuReading, handle: Any) -> GpuReading:
        lib = self._lib
        modes = self._optional("nvmlDeviceGetMigMode", handle)
        if not modes or not modes[0]:
            return replace(reading, mig_enabled=False, mig_pending=bool(modes[1]) if modes else None)
        instances = []
        for slot in range(lib.nvmlDeviceGetMaxMigDeviceCount(handle)):
            try:
                mig = lib.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except lib.NVMLError:
                continue  # empty slot
            # MIG devices are named "<GPU name> MIG 3g.40gb".
            name = _text(lib.nvmlDeviceGetName(mig))
            profile = name.rsplit("MIG ", 1)[-1] if "MIG " in name else name
            instances.append(MigInstance(profile, int(lib.nvmlDeviceGetMemoryInfo(mig).total) // (1024 * 1024)))
        return replace(reading, mig_enabled=True, mig_pending=bool(modes[1]), mig_instances=tuple(instances))

    def _optional(self, name: str, *args: Any) -> Any:
        """NVML function ``name``'s answer, or None where this GPU (or this pynvml) does not support it."""
        call = getattr(self._lib, name, None)
        if call is None:  # an older pynvml without this call
            return None
        try:
            return call(*args)
        except self._lib.NVMLError as error:
            if getattr(error, "value", None) == ERROR_GPU_IS_LOST:
                raise
            return None


@dataclass(frozen=True)
class _StaticFacts:
    template: GpuReading  # identity, memory, link maxima, virtualization and MIG
    power: PowerReading | None  # default and constraints
    read_at: float


def _lost(last: GpuReading, reason: str) -> GpuReading:
    return replace(last, health="lost", health_reasons=(reason,))


def _text(value: str | bytes) -> str:
    # Older pynvml releases return bytes.
    return value.decode() if isinstance(value, bytes) else value
