"""Plan power-limit changes: the operator's request and NVML's state in, actions and status out. Pure.

Re-planning every poll makes the agent idempotent and self-healing: a limit lost to a driver
reload, GPU reset or reboot differs from the target again and is re-applied.
"""

from dataclasses import dataclass

from egpu_api.power import PowerLimitStatus
from egpu_node_agent.readings import GpuReading


@dataclass(frozen=True)
class PowerAction:
    uuid: str
    watts: int
    why: str  # for logs and events: "request", "drift", "restore default"


def plan_power(
    request: dict[str, int], previous: dict[str, PowerLimitStatus], readings: list[GpuReading], read_only: bool
) -> tuple[list[PowerAction], dict[str, PowerLimitStatus]]:
    """What to set, and the status to report (``applied_watts`` is NVML's value before the actions)."""
    gpus = {reading.uuid: reading for reading in readings if reading.health != "lost"}
    actions: list[PowerAction] = []
    status: dict[str, PowerLimitStatus] = {}

    for uuid, watts in sorted(request.items()):
        gpu = gpus.get(uuid)
        if gpu is None:
            status[uuid] = PowerLimitStatus(
                requested_watts=watts, target_watts=None, applied_watts=None, error="no healthy GPU with this uuid here"
            )
            continue
        if gpu.power is None:
            status[uuid] = PowerLimitStatus(
                requested_watts=watts,
                target_watts=None,
                applied_watts=None,
                error="NVML cannot read or set this GPU's power limit (vGPU guest?)",
            )
            continue
        power = gpu.power
        target = min(max(watts, power.min_limit_watts), power.max_limit_watts)
        if power.limit_watts != target:
            before = previous.get(uuid)
            drifted = before is not None and before.target_watts == target and before.error is None
            actions.append(PowerAction(uuid, target, "drift" if drifted else "request"))
        status[uuid] = PowerLimitStatus(
            requested_watts=watts,
            target_watts=target,
            applied_watts=power.limit_watts,
            clamped=target != watts,
            dry_run=read_only,
        )

    # GPUs we managed that are no longer requested go back to their default limit.
    for uuid in sorted(set(previous) - set(request)):
        gpu = gpus.get(uuid)
        if gpu is None or gpu.power is None or gpu.power.limit_watts == gpu.power.default_limit_watts:
            continue  # nothing to restore (or nothing we can restore); forget it
        actions.append(PowerAction(uuid, gpu.power.default_limit_watts, "restore default"))
        status[uuid] = PowerLimitStatus(
            requested_watts=None,
            target_watts=gpu.power.default_limit_watts,
            applied_watts=gpu.power.limit_watts,
            dry_run=read_only,
        )
    return actions, status
