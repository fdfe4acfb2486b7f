"""Which GPU each pod got: the node agent's ``egpu-operator.io/gpu-assignments`` annotation.

The device plugin, not the operator, picks the GPU a pod gets; the kubelet knows which, and
tells whoever asks on the node through its PodResources API. The node agent asks and publishes
``{"<namespace>/<pod>": ["GPU-<uuid>", ...]}`` for the pods holding ``nvidia.com/gpu``: GPU
UUIDs as NVML reports them (a time-sliced replica ``GPU-<uuid>::<n>`` becomes its GPU's UUID;
a MIG slice keeps its ``MIG-<uuid>``). The operator then puts each replica's power limit on the
GPU its pod really got. The JSON is canonical (sorted keys, sorted lists, no spaces), so an
unchanged assignment is an unchanged string and the agent sends no patch.
"""

import json
from collections.abc import Iterable, Mapping

#: Separates a GPU's UUID from the replica number the device plugin's time-slicing appends.
REPLICA_SEPARATOR = "::"


def pod_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def gpu_uuid(device_id: str) -> str:
    """The GPU (or MIG slice) UUID of a device-plugin device id: ``GPU-x::2`` is ``GPU-x``."""
    return device_id.split(REPLICA_SEPARATOR, 1)[0]


def dump_assignments(assignments: Mapping[str, Iterable[str]]) -> str:
    """Canonical JSON: the same assignments always give the same string."""
    canonical = {pod: sorted(set(uuids)) for pod, uuids in assignments.items()}
    return json.dumps(canonical, sort_keys=True, separators=(",", ":"))


def parse_assignments(text: str | None) -> dict[str, tuple[str, ...]] | None:
    """The annotation as {"namespace/pod": (uuid, ...)}; None when it is absent or does not parse,
    which means "not known": the reader falls back to what it did without it."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    parsed: dict[str, tuple[str, ...]] = {}
    for pod, uuids in value.items():
        if not isinstance(uuids, list) or not all(isinstance(uuid, str) for uuid in uuids):
            return None
        parsed[str(pod)] = tuple(uuids)
    return parsed
