"""Plan power-limit changes: the operator's request and NVML's state in, actions and status out. Pure.

Re-planning every poll makes the agent idempotent and self-healing: a limit lost to a driver
reload, GPU reset or reboot (back at the default) differs from the target again and is
re-applied. A limit moved to any other value was set by someone else (a DCGM policy, an
administrator's ``nvidia-smi -pl``): the agent hands the GPU over instead of fighting, and takes
it back only when the operator's request for it changes or the limit returns to the agent's
target (``egpu_api.power`` has the whole rule). Only limits the agent owns are ever restored.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from egpu_api.power import EXTERNALLY_MANAGED, PowerLimitStatus
from egpu_node_agent.readings import GpuReading, PowerReading


@dataclass(frozen=True)
class PowerAction:
    uuid: str
    watts: int
    why: str  # for logs and events: "request", "drift", "restore default"


@dataclass(frozen=True)
class PowerPlan:
    actions: list[PowerAction]
    status: dict[str, PowerLimitStatus]
    # GPUs whose limit the agent leaves as it is although it is not the default, with the reason.
    left: dict[str, str] = field(default_factory=dict)


def plan_power(
    request: dict[str, int], previous: Mapping[str, PowerLimitStatus], readings: list[GpuReading], read_only: bool
) -> PowerPlan:
    """What to set, and the status to report (``applied_watts`` is NVML's value before the actions)."""
    gpus = _healthy(readings)
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
        before = previous.get(uuid)
        entry = PowerLimitStatus(
            requested_watts=watts,
            target_watts=target,
            applied_watts=power.limit_watts,
            clamped=target != watts,
            dry_run=read_only,
            set_by_agent_watts=_owned(before, power),
        )
        if _set_by_someone_else(watts, target, before, power, read_only):
            status[uuid] = entry.model_copy(
                update={
                    "state": EXTERNALLY_MANAGED,
                    "message": f"NVML enforces {power.limit_watts} W, not the {target} W the agent set: someone else "
                    "(a DCGM policy, nvidia-smi -pl) manages this GPU's limit, so the agent leaves it alone; to hand it "
                    f"back, set it to {target} W again or change the deployment's spec.power",
                }
            )
            continue
        if power.limit_watts != target:
            drifted = before is not None and before.target_watts == target and before.error is None
            actions.append(PowerAction(uuid, target, "drift" if drifted else "request"))
        status[uuid] = entry

    # GPUs we managed that are no longer requested go back to their default limit, if it is ours.
    restore = plan_restore(previous, readings, set(previous) - set(request))
    for action in restore.actions:
        limit = previous[action.uuid].owned_watts()  # plan_restore acts only where NVML still shows it
        actions.append(action)
        status[action.uuid] = PowerLimitStatus(
            requested_watts=None, target_watts=action.watts, applied_watts=limit, dry_run=read_only, set_by_agent_watts=limit
        )
    return PowerPlan(actions, status, restore.left)


def plan_restore(previous: Mapping[str, PowerLimitStatus], readings: list[GpuReading], uuids: Iterable[str]) -> PowerPlan:
    """Put back the default limit of each of ``uuids`` whose current limit the agent set itself.

    A limit someone else set (or one NVML cannot read now) is left, and ``left`` says so; a GPU
    already at its default needs nothing. ``status`` stays empty: what to report is the caller's.
    """
    gpus = _healthy(readings)
    actions: list[PowerAction] = []
    left: dict[str, str] = {}
    for uuid in sorted(uuids):
        gpu = gpus.get(uuid)
        before = previous.get(uuid)
        if gpu is None or gpu.power is None:
            left[uuid] = "its power limit cannot be read now (GPU lost or unsupported); nothing restored"
            continue
        power = gpu.power
        if power.limit_watts == power.default_limit_watts:
            continue
        if before is None or _owned(before, power) is None:
            left[uuid] = (
                f"left at {power.limit_watts} W (default {power.default_limit_watts} W): someone else set that limit, "
                "so it is theirs to change"
            )
            continue
        actions.append(PowerAction(uuid, power.default_limit_watts, "restore default"))
    return PowerPlan(actions, {}, left)


def _healthy(readings: list[GpuReading]) -> dict[str, GpuReading]:
    return {reading.uuid: reading for reading in readings if reading.health != "lost"}


def _owned(before: PowerLimitStatus | None, power: PowerReading) -> int | None:
    """The agent owns the current limit only if it set that very value (and nothing moved it since)."""
    owned = before.owned_watts() if before is not None else None
    return owned if owned == power.limit_watts else None


def _set_by_someone_else(watts: int, target: int, before: PowerLimitStatus | None, power: PowerReading, read_only: bool) -> bool:
    """Whether NVML's limit was moved by someone else since the agent's limit was in force."""
    if before is None or read_only or before.requested_watts != watts:
        return False  # a new request: the operator asked, so the agent takes the GPU (again)
    if power.limit_watts == target:
        return False  # agrees with the agent (again): managed
    if before.state == EXTERNALLY_MANAGED:
        return True  # handed over until the request changes or the limit returns to the target
    in_force = before.error is None and not before.dry_run and before.applied_watts == before.target_watts == target
    # Back at the default is a driver reload, GPU reset or reboot: re-apply, as before.
    return in_force and power.limit_watts != power.default_limit_watts
