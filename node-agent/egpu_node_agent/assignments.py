"""Where the agent learns which GPU each pod got: the seam between real and simulated nodes.

An ``AssignmentSource`` answers ``{"namespace/pod": [GPU uuid, ...]}`` for the pods on its node
that hold ``nvidia.com/gpu``, or None when it cannot tell right now. None is "unknown", never
"no pods": the agent then leaves the published annotation as it is (or publishes none), and the
operator falls back to attributing power limits by count. Two sources:

- ``podresources.PodResourcesSource`` asks the kubelet (real nodes);
- ``SimulatedAssigner`` plays the device plugin for a KWOK node, which has no kubelet: it hands
  each pod bound to the node the free device with the lowest index, and remembers what it
  handed out, so a pod keeps its GPU for as long as it lives.
"""

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from egpu_api import keys
from egpu_api.assignments import gpu_uuid, pod_key
from egpu_api.fleet import FleetNode

log = logging.getLogger("egpu_node_agent.assignments")


class AssignmentSource(Protocol):
    def assignments(self) -> dict[str, list[str]] | None:
        """Each GPU pod's GPU uuid(s) on this node; None when that cannot be known now. Never raises
        for a missing or refused source (it logs that once)."""
        ...


def simulated_devices(node: FleetNode) -> list[str]:
    """The device ids the NVIDIA device plugin would advertise for a fleet node, lowest GPU index
    first: a GPU's UUID, or ``<uuid>::<n>`` for each time-slicing replica or MIG slice (the profile
    gives slices no UUIDs of their own, so a simulated slice reports its GPU's)."""
    devices: list[str] = []
    for index, gpu in enumerate(node.gpus):
        uuid, units = node.gpu_uuid(index), gpu.schedulable_units * node.time_slicing_replicas
        devices += [uuid] if units == 1 else [f"{uuid}::{n}" for n in range(units)]
    return devices


def gpu_count(pod: Mapping[str, Any]) -> int:
    """``nvidia.com/gpu`` a pod holds: the sum of its containers' limits (what the scheduler counts)."""
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        limit = ((container.get("resources") or {}).get("limits") or {}).get(keys.GPU_RESOURCE, 0)
        try:
            total += max(0, int(str(limit)))
        except ValueError:
            continue
    return total


class SimulatedAssigner:
    """The assignment source of a simulated node: the device plugin's choice, made here.

    ``pods`` returns the pods bound to the node (raw API dicts); it may raise, which makes the
    answer unknown for this poll."""

    def __init__(self, devices: Sequence[str], pods: Callable[[], Iterable[Mapping[str, Any]]]) -> None:
        self.devices = list(devices)
        self._pods = pods
        self._given: dict[tuple[str, str], tuple[int, ...]] = {}  # (namespace/name, uid) -> device indexes

    def assignments(self) -> dict[str, list[str]] | None:
        try:
            pods = list(self._pods())
        except Exception as error:
            log.debug("pods not listed; GPU assignments unknown this poll", extra={"error": str(error)})
            return None
        holding: dict[tuple[str, str], tuple[str, int]] = {}
        for pod in pods:
            metadata, status = pod.get("metadata") or {}, pod.get("status") or {}
            count = gpu_count(pod)
            if count and status.get("phase") not in ("Succeeded", "Failed"):
                identity = (pod_key(metadata.get("namespace", ""), metadata.get("name", "")), str(metadata.get("uid", "")))
                holding[identity] = (str(metadata.get("creationTimestamp") or ""), count)
        self._given = {identity: given for identity, given in self._given.items() if identity in holding}
        taken = {index for given in self._given.values() for index in given}
        # Oldest first, so two pods arriving between polls get the same GPUs whatever order the list has.
        for identity in sorted(set(holding) - set(self._given), key=lambda identity: (holding[identity][0], identity)):
            free = [index for index in range(len(self.devices)) if index not in taken][: holding[identity][1]]
            if len(free) < holding[identity][1]:
                continue  # more than the node has: a kubelet would have refused the pod
            self._given[identity] = tuple(free)
            taken.update(free)
        found: dict[str, list[str]] = {}
        for (key, _), given in self._given.items():
            found.setdefault(key, []).extend(gpu_uuid(self.devices[index]) for index in given)
        return {key: sorted(set(uuids)) for key, uuids in found.items()}
