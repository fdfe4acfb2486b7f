"""The documented no-GPU mode: a backend with no GPUs, for nodes where NVML is absent on purpose."""

from egpu_node_agent.readings import GpuReading


class NoGpuBackend:
    """``GpuBackend`` that reports no GPU; the agent then publishes ``gpu-count=0`` and nothing else."""

    def read(self, telemetry: bool = True) -> list[GpuReading]:
        return []

    def set_power_limit(self, uuid: str, watts: int) -> None:
        raise LookupError(f"no GPU {uuid} on a node in no-GPU mode")

    def close(self) -> None:
        return None
