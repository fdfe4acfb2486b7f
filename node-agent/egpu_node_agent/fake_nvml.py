"""A fake NVML library fed by a fleet-profile node, with fault injection.

``FakeNvml`` answers the NVML calls ``NvmlBackend`` makes, by pynvml's names, with pynvml's
units (bytes, milliwatts) and error codes, so the backend's real code runs against it.
``FakeGpuHost`` pairs it with a fake sysfs tree and injects the faults edge hosts meet:
a GPU falling off the bus (Xid 79), a link downtraining, a power limit NVML refuses, a power
limit someone else sets (``nvidia-smi -pl``, a DCGM policy), and NVML failing to load at all.
``FakeNvml.power_limit_sets`` records every limit set through NVML's API, so a test can tell
what the agent set from what was set around it.
"""

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from egpu_api.fleet import FleetNode
from egpu_api.pcie import LinkSpeed
from egpu_node_agent import fake_sysfs

NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_GPU_IS_LOST = 15
_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
}
_VIRTUALIZATION = {"none": 0, "passthrough": 1, "vgpu-guest": 2, "vgpu-host": 3}
_MIB = 1024 * 1024


class NVMLError(Exception):
    """Same shape as pynvml.NVMLError: the code is in ``value``."""

    def __init__(self, value: int) -> None:
        super().__init__(_MESSAGES.get(value, f"NVML error {value}"))
        self.value = value


@dataclass
class _PciInfo:
    busId: str


@dataclass
class _Memory:
    total: int
    free: int
    used: int


@dataclass
class FakeGpu:
    """Mutable state of one fake GPU; change it through ``FakeGpuHost``."""

    uuid: str
    name: str
    bus_id: str
    memory_bytes: int
    link: LinkSpeed
    link_max: LinkSpeed
    gpu_max_generation: int
    power_mw: tuple[int, int, int, int] | None  # limit, default, min, max
    virtualization: int
    mig_instances: list[tuple[str, int]] = field(default_factory=list)  # (profile, bytes)
    mig_enabled: bool = False
    performance_state: int = 8
    temperature_c: int = 38
    lost: bool = False
    vanished: bool = False
    set_power_error: int | None = None


class FakeNvml:
    """The NVML calls the backend makes, answered from ``FakeGpu`` state."""

    NVMLError = NVMLError
    NVML_ERROR_GPU_IS_LOST = NVML_ERROR_GPU_IS_LOST
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED

    def __init__(self, gpus: list[FakeGpu]) -> None:
        self.gpus = gpus
        self.init_error: int | None = None
        self.initialised = False
        self.calls = 0  # NVML calls answered, for benchmarks
        # (uuid, milliwatts) of every nvmlDeviceSetPowerManagementLimit that succeeded, in order.
        self.power_limit_sets: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    # -- library ---------------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        return "580.95.05"

    def nvmlDeviceGetCount(self) -> int:
        self._count()
        return sum(1 for gpu in self.gpus if not gpu.vanished)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        visible = [i for i, gpu in enumerate(self.gpus) if not gpu.vanished]
        if not 0 <= index < len(visible):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return visible[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        for index, gpu in enumerate(self.gpus):
            if gpu.uuid == uuid and not gpu.vanished:
                return index
        raise NVMLError(NVML_ERROR_NOT_FOUND)

    # -- per device ------------------------------------------------------------------------------

    def nvmlDeviceGetName(self, handle: Any) -> str:
        if isinstance(handle, tuple):
            gpu = self._gpu(handle[0])
            return f"{gpu.name} MIG {gpu.mig_instances[handle[1]][0]}"
        return self._gpu(handle).name

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return self._gpu(handle).uuid

    def nvmlDeviceGetPciInfo(self, handle: int) -> _PciInfo:
        domain, rest = self._gpu(handle).bus_id.split(":", 1)
        return _PciInfo(busId=f"{int(domain, 16):08X}:{rest.upper()}")

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> _Memory:
        total = self._gpu(handle[0]).mig_instances[handle[1]][1] if isinstance(handle, tuple) else self._gpu(handle).memory_bytes
        return _Memory(total=total, free=total - 512 * _MIB, used=512 * _MIB)

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: int) -> int:
        return self._gpu(handle).link.generation

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: int) -> int:
        return self._gpu(handle).link.width

    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle: int) -> int:
        return self._gpu(handle).link_max.generation

    def nvmlDeviceGetMaxPcieLinkWidth(self, handle: int) -> int:
        return self._gpu(handle).link_max.width

    def nvmlDeviceGetGpuMaxPcieLinkGeneration(self, handle: int) -> int:
        return self._gpu(handle).gpu_max_generation

    def nvmlDeviceGetPowerManagementLimit(self, handle: int) -> int:
        return self._power(handle)[0]

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:
        return self._power(handle)[0]

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: int) -> int:
        return self._power(handle)[1]

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: int) -> tuple[int, int]:
        power = self._power(handle)
        return power[2], power[3]

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return self._power(handle)[0] // 3

    def nvmlDeviceSetPowerManagementLimit(self, handle: int, milliwatts: int) -> None:
        gpu = self._gpu(handle)
        power = self._power(handle)
        if gpu.set_power_error is not None:
            raise NVMLError(gpu.set_power_error)
        if not power[2] <= milliwatts <= power[3]:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        with self._lock:
            gpu.power_mw = (milliwatts, power[1], power[2], power[3])
            self.power_limit_sets.append((gpu.uuid, milliwatts))

    def nvmlDeviceGetVirtualizationMode(self, handle: int) -> int:
        return self._gpu(handle).virtualization

    def nvmlDeviceGetMigMode(self, handle: int) -> list[int]:
        gpu = self._gpu(handle)
        if gpu.virtualization == _VIRTUALIZATION["vgpu-guest"]:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return [int(gpu.mig_enabled), int(gpu.mig_enabled)]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: int) -> int:
        return 7 if self._gpu(handle).mig_enabled else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: int, slot: int) -> tuple[int, int]:
        if slot >= len(self._gpu(handle).mig_instances):
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return handle, slot

    def nvmlDeviceGetPerformanceState(self, handle: int) -> int:
        return self._gpu(handle).performance_state

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return self._gpu(handle).temperature_c

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: int) -> int:
        self._gpu(handle)
        return 0x1  # GPU idle

    def nvmlDeviceGetPcieReplayCounter(self, handle: int) -> int:
        self._gpu(handle)
        return 0

    def nvmlDeviceGetPcieThroughput(self, handle: int, counter: int) -> int:
        self._gpu(handle)
        return 0

    # -- helpers -----------------------------------------------------------------------------

    def _count(self) -> None:
        self.calls += 1
        if not self.initialised:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def _gpu(self, handle: int) -> FakeGpu:
        self._count()
        gpu = self.gpus[handle]
        if gpu.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        return gpu

    def _power(self, handle: int) -> tuple[int, int, int, int]:
        power = self._gpu(handle).power_mw
        if power is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return power


class FakeGpuHost:
    """A fleet-profile node as NVML and sysfs show it, plus the faults tests inject."""

    def __init__(self, node: FleetNode, sysfs_root: Path) -> None:
        self.node = node
        self.sysfs_root = sysfs_root
        fake_sysfs.build_tree(node, sysfs_root)
        self.nvml = FakeNvml([self._gpu(index) for index in range(len(node.gpus))])

    def _gpu(self, index: int) -> FakeGpu:
        gpu = self.node.gpus[index]
        own = gpu.links[0]
        power = gpu.power
        return FakeGpu(
            uuid=self.node.gpu_uuid(index),
            name=gpu.product,
            bus_id=self.node.gpu_pci_bus_id(index),
            memory_bytes=gpu.memory_mib * _MIB,
            link=own.current.speed,
            link_max=own.capability,
            gpu_max_generation=own.device.generation,
            power_mw=(
                None
                if power is None
                else (
                    power.limit_watts * 1000,
                    power.default_limit_watts * 1000,
                    power.min_limit_watts * 1000,
                    power.max_limit_watts * 1000,
                )
            ),
            virtualization=_VIRTUALIZATION[gpu.virtualization_mode],
            mig_enabled=bool(gpu.mig and gpu.mig.enabled),
            mig_instances=[
                (device.profile, device.memory_mib * _MIB)
                for device in (gpu.mig.devices if gpu.mig else [])
                for _ in range(device.count)
            ],
            performance_state=0 if gpu.busy else 8,
        )

    # -- faults ----------------------------------------------------------------------------------

    def lose_gpu(self, index: int, vanish: bool = False) -> None:
        """The GPU falls off the bus (Xid 79); with ``vanish`` the driver stops counting it too."""
        self.nvml.gpus[index].lost = True
        self.nvml.gpus[index].vanished = vanish

    def recover_gpu(self, index: int) -> None:
        self.nvml.gpus[index].lost = False
        self.nvml.gpus[index].vanished = False

    def downtrain(self, index: int, speed: LinkSpeed, hop: int = 0) -> None:
        """Link ``hop`` of GPU ``index`` (0 = its own link) retrains at ``speed``."""
        if hop == 0:
            self.nvml.gpus[index].link = speed
        fake_sysfs.set_current(self.sysfs_root, self.node.gpu_pci_bus_id(index), hop, speed)

    def set_busy(self, index: int, busy: bool = True) -> None:
        """P0 when busy, P8 when idle: what the agent uses to tell idle downclocking from a bad link."""
        self.nvml.gpus[index].performance_state = 0 if busy else 8

    def fail_set_power(self, index: int, code: int = NVML_ERROR_NO_PERMISSION) -> None:
        self.nvml.gpus[index].set_power_error = code

    def set_power_limit_externally(self, index: int, watts: int) -> None:
        """Someone else sets the limit (an administrator's ``nvidia-smi -pl``, a DCGM policy): not recorded
        in ``power_limit_sets``, which holds only what went through this library."""
        gpu = self.nvml.gpus[index]
        assert gpu.power_mw is not None, "this GPU has no power limit to set"
        with self.nvml._lock:
            gpu.power_mw = (watts * 1000, *gpu.power_mw[1:])

    def driver_reload(self) -> None:
        """The driver reloads (or the GPU resets): every power limit is back at its default."""
        for gpu in self.nvml.gpus:
            if gpu.power_mw is not None:
                gpu.power_mw = (gpu.power_mw[1], gpu.power_mw[1], gpu.power_mw[2], gpu.power_mw[3])

    def unload_driver(self) -> None:
        """The driver goes away under a running agent: every NVML call fails (uninitialised) until ``load_driver``."""
        self.nvml.initialised = False

    def load_driver(self) -> None:
        self.nvml.initialised = True

    def fail_init(self, code: int = NVML_ERROR_DRIVER_NOT_LOADED) -> None:
        self.nvml.init_error = code
