"""The fleet-profile format: a YAML description of GPU nodes as NVML and sysfs would report them.

One format serves three readers: the local cluster creates one fake (KWOK) node per entry,
the node agent's fake NVML backend answers NVML calls from it, and the demo prints it.
So it records what the hardware reports, not what we conclude: each GPU's PCIe path as a
list of links from the GPU up to the root port, each with the speed it trained at and what
both ends support; the power limit and its constraints; MIG and virtualization mode.

A profile that does not validate raises ``FleetProfileError`` whose message names every bad
field by path (``nodes[2].gpus[0].power.minLimitWatts``) and says how to fix it, one problem per
line. Profiles are written by hand, so numbers must be written as numbers (``memoryMib: true`` or
``"24564"`` is refused, not coerced) and lie within what real hardware reports.
"""

import re
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

from egpu_api.keys import API_GROUP, API_VERSION, GPU_RESOURCE, MIG_RESOURCE_PREFIX, SHARED_GPU_RESOURCE
from egpu_api.pcie import MAX_GENERATION, VALID_WIDTHS, LinkSpeed, bottleneck

FLEET_API_VERSION: Final = f"{API_GROUP}/{API_VERSION}"
FLEET_KIND: Final = "FleetProfile"
DEFAULT_FLEET: Final = Path(__file__).parent / "fleets" / "edge-default.yaml"

# Kubernetes node names are DNS-1123 subdomains; we keep to labels so the name fits in a label value.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_PCI_BUS_ID = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_MIG_PROFILE = re.compile(r"^[1-8]g\.[0-9]+gb(\+me)?$")
# NVML's GPU UUID: "GPU-" and a lower-case RFC 4122 UUID (MIG devices use "MIG-"; not GPU uuids).
_NVML_GPU_UUID = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# GPUs that support MIG, by the product names NVML reports ("NVIDIA A100-SXM4-80GB", "NVIDIA H100
# 80GB HBM3", "NVIDIA RTX PRO 6000 Blackwell Server Edition"). A profile is a description of real
# hardware, so MIG slices on any other card are a mistake. Word boundaries keep "A30" from
# matching "RTX A3000" and "H20" from matching "H200".
MIG_CAPABLE_PRODUCTS: Final = re.compile(
    r"\b(A100|A30|A800|H100|H20|H200|H800|GH200|B100|B200|GB200|B300|GB300)\b|\bRTX PRO [56]000 Blackwell\b"
)
# Bounds on sizes: beyond any hardware that exists, so a slipped digit or a unit mix-up (GB
# written where MiB belongs) is refused instead of simulated.
MAX_GPU_MEMORY_MIB: Final = 1024 * 1024  # 1 TiB; the largest GPUs have 288 GB
MAX_HOST_MEMORY_MIB: Final = 64 * 1024 * 1024  # 64 TiB
MAX_CPU_CORES: Final = 4096
MAX_GPU_WATTS: Final = 2000  # the InferenceDeployment API's limitWatts bound too
MAX_HOST_GPU_POWER_WATTS: Final = 100_000
MAX_GPUS_PER_NODE: Final = 64
MAX_LINKS_PER_GPU: Final = 16  # PCIe hops from a GPU to its root port
MAX_STORAGE_MBPS: Final = 1_000_000  # 1 TB/s: beyond any storage a host reads models from

# Whole numbers only: pydantic's lax mode would read `true` as 1 and "24564" as 24564.
StrictInt = Annotated[int, Field(strict=True)]
# Namespace for UUIDs derived from node name and GPU index, so an omitted uuid is stable across runs.
_UUID_NAMESPACE: Final = uuid.UUID("6f1f9a52-3c1e-4c43-9e52-0d7c2b1e9a10")

VirtualizationMode = Literal["none", "passthrough", "vgpu-guest", "vgpu-host"]
HostKind = Literal["bare-metal", "vm"]


class FleetProfileError(ValueError):
    """A fleet profile that cannot be read or does not validate; the message is for the user."""


class _Model(BaseModel):
    # Profiles are written by hand: reject unknown keys (typos) and accept the camelCase
    # spelling Kubernetes users expect.
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


class LinkCapability(_Model):
    """A PCIe generation and lane count."""

    generation: Annotated[StrictInt, Field(ge=1, le=MAX_GENERATION)]
    width: StrictInt

    @field_validator("width")
    @classmethod
    def _known_width(cls, width: int) -> int:
        if width not in VALID_WIDTHS:
            raise ValueError(f"must be one of {', '.join(map(str, VALID_WIDTHS))} lanes")
        return width

    @property
    def speed(self) -> LinkSpeed:
        return LinkSpeed(self.generation, self.width)


class PcieLink(_Model):
    """One hop on the way from the GPU to the root port.

    ``current`` is what the link trained at (sysfs ``current_link_speed``/``width`` of the
    downstream device); ``device`` and ``port`` are the maxima of the downstream device and
    the upstream port (their ``max_link_*``). A link can never run faster than both ends
    allow; running slower than that is downtraining, which the node agent reports.
    ``shared`` names a link that several GPUs of the node sit below (a PCIe switch's uplink):
    every GPU whose path lists the same name shares that one link and its bandwidth.
    """

    description: str = ""
    current: LinkCapability
    device: LinkCapability
    port: LinkCapability
    shared: str | None = None

    @field_validator("shared")
    @classmethod
    def _shared_name(cls, name: str | None) -> str | None:
        if name is not None and not _DNS_LABEL.match(name):
            raise ValueError(f"{name!r} is not a link name; use lower-case letters, digits and '-', e.g. 'switch0-uplink'")
        return name

    @property
    def capability(self) -> LinkSpeed:
        """The fastest this link can train at: the lesser of both ends, per dimension."""
        return LinkSpeed(min(self.device.generation, self.port.generation), min(self.device.width, self.port.width))

    @property
    def degraded(self) -> bool:
        return self.current.speed.bandwidth_mbps < self.capability.bandwidth_mbps

    @model_validator(mode="after")
    def _current_within_capability(self) -> Self:
        cap = self.capability
        if self.current.generation > cap.generation or self.current.width > cap.width:
            raise ValueError(
                f"current link {self.current.speed} is faster than both ends allow ({cap}); "
                "lower `current` or raise `device`/`port`"
            )
        return self


class PowerLimits(_Model):
    """NVML's power-limit view of a GPU, in watts (NVML reports milliwatts; profiles use watts)."""

    limit_watts: Annotated[StrictInt, Field(gt=0, le=MAX_GPU_WATTS)]
    default_limit_watts: Annotated[StrictInt, Field(gt=0, le=MAX_GPU_WATTS)]
    min_limit_watts: Annotated[StrictInt, Field(gt=0, le=MAX_GPU_WATTS)]
    max_limit_watts: Annotated[StrictInt, Field(gt=0, le=MAX_GPU_WATTS)]

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        lo, hi = self.min_limit_watts, self.max_limit_watts
        if lo > hi:
            raise ValueError(f"minLimitWatts ({lo}) is above maxLimitWatts ({hi}); swap them")
        for name, value in (("limitWatts", self.limit_watts), ("defaultLimitWatts", self.default_limit_watts)):
            if not lo <= value <= hi:
                raise ValueError(f"{name} ({value}) must lie within minLimitWatts..maxLimitWatts ({lo}..{hi})")
        return self


class MigDevice(_Model):
    """A group of identical MIG instances, e.g. two ``3g.40gb`` slices."""

    profile: str
    memory_mib: Annotated[StrictInt, Field(gt=0, le=MAX_GPU_MEMORY_MIB)]
    count: Annotated[StrictInt, Field(ge=1, le=7)] = 1

    @field_validator("profile")
    @classmethod
    def _profile_shape(cls, profile: str) -> str:
        if not _MIG_PROFILE.match(profile):
            raise ValueError(f"{profile!r} is not a MIG profile name; use the form '3g.40gb' or '1g.10gb+me'")
        return profile


class MigConfig(_Model):
    """MIG mode as NVML reports it (current and pending) and the instances created."""

    enabled: bool
    pending_enabled: bool | None = None
    devices: list[MigDevice] = []

    @model_validator(mode="after")
    def _devices_need_mig(self) -> Self:
        if self.devices and not self.enabled:
            raise ValueError("devices are listed but MIG is not enabled; set enabled: true or remove devices")
        return self

    @property
    def instance_count(self) -> int:
        return sum(device.count for device in self.devices)


class Gpu(_Model):
    """One GPU as NVML and sysfs see it."""

    # Validated in this order; the mig check below reads product and memoryMib.
    product: Annotated[str, Field(min_length=1)]
    uuid: str | None = None
    pci_bus_id: str | None = None
    memory_mib: Annotated[StrictInt, Field(gt=0, le=MAX_GPU_MEMORY_MIB)]
    # Ordered from the GPU's own link (what NVML reports) up to the link into the root port.
    links: Annotated[list[PcieLink], Field(min_length=1, max_length=MAX_LINKS_PER_GPU)]
    # None where NVML cannot read or set power limits (e.g. inside a vGPU guest).
    power: PowerLimits | None
    virtualization_mode: VirtualizationMode = "none"
    mig: MigConfig | None = None
    # Busy GPUs report performance state P0, idle ones P8 (and an idle GPU may park its link).
    busy: bool = False

    @field_validator("uuid")
    @classmethod
    def _nvml_uuid(cls, uuid_text: str | None) -> str | None:
        if uuid_text is not None and not _NVML_GPU_UUID.match(uuid_text):
            raise ValueError(
                f"{uuid_text!r} is not a GPU uuid as NVML reports it; use the form "
                "'GPU-6f1f9a52-3c1e-4c43-9e52-0d7c2b1e9a10' (lower-case hex), or leave it out to derive one"
            )
        return uuid_text

    @field_validator("mig")
    @classmethod
    def _mig_on_this_gpu(cls, mig: MigConfig | None, info: ValidationInfo) -> MigConfig | None:
        """Slices only on a GPU that has MIG, each no larger than the GPU (field validators see the
        fields declared above them, when those validated)."""
        if mig is None or not (mig.enabled or mig.devices):
            return mig
        product = info.data.get("product")
        if isinstance(product, str) and not MIG_CAPABLE_PRODUCTS.search(product):
            raise ValueError(
                f"{product!r} does not support MIG (A100, A30, H100, H200, B200 and their variants do); "
                "remove `mig` or correct `product`"
            )
        memory_mib = info.data.get("memory_mib")
        if isinstance(memory_mib, int):
            for index, device in enumerate(mig.devices):
                if device.memory_mib > memory_mib:
                    raise ValueError(
                        f"devices[{index}] ({device.profile}) has memoryMib {device.memory_mib}, more than the GPU's "
                        f"memoryMib {memory_mib}; a slice is a part of the GPU"
                    )
        return mig

    @field_validator("pci_bus_id")
    @classmethod
    def _bus_id_shape(cls, bus_id: str | None) -> str | None:
        if bus_id is not None and not _PCI_BUS_ID.match(bus_id):
            raise ValueError(f"{bus_id!r} is not a PCI bus id; use the form '0000:01:00.0' (lower-case hex)")
        return bus_id

    @model_validator(mode="after")
    def _mig_fits(self) -> Self:
        if self.mig is None or not self.mig.enabled:
            return self
        if self.virtualization_mode == "vgpu-guest":
            raise ValueError("a vGPU guest cannot run MIG; remove `mig` or set virtualizationMode")
        used = sum(d.memory_mib * d.count for d in self.mig.devices)
        if used > self.memory_mib:
            raise ValueError(f"MIG devices use {used} MiB but the GPU has {self.memory_mib} MiB; remove a device")
        return self

    @property
    def bottleneck(self) -> LinkSpeed:
        """The slowest hop between host memory and this GPU, at its trained speed."""
        return bottleneck([link.current.speed for link in self.links])

    @property
    def schedulable_units(self) -> int:
        """How many ``nvidia.com/gpu`` units the device plugin advertises (MIG 'single' strategy)."""
        if self.mig is not None and self.mig.enabled:
            return self.mig.instance_count
        return 1


class Host(_Model):
    """The machine the GPUs hang off."""

    description: str = ""
    kind: HostKind = "bare-metal"
    arch: Literal["amd64", "arm64"] = "amd64"
    cpu_cores: Annotated[StrictInt, Field(ge=1, le=MAX_CPU_CORES)]
    memory_mib: Annotated[StrictInt, Field(gt=0, le=MAX_HOST_MEMORY_MIB)]
    # What the host's power path can feed the GPUs (dock PSU, slot power); informational.
    gpu_power_budget_watts: Annotated[StrictInt, Field(gt=0, le=MAX_HOST_GPU_POWER_WATTS)] | None = None
    # Sequential read rate of the model cache in MB/s (an SD card ~90, a USB 3 SSD ~400, NVMe 2000+),
    # which the simulated agent publishes as if measured; None: not known, as when the probe is off.
    storage_read_mbps: Annotated[StrictInt, Field(gt=0, le=MAX_STORAGE_MBPS)] | None = Field(
        default=None, alias="storageReadMBps"
    )


class FleetNode(_Model):
    """One Kubernetes node: a host and its GPUs."""

    name: str
    host: Host
    gpus: Annotated[list[Gpu], Field(max_length=MAX_GPUS_PER_NODE)]
    # The NVIDIA device plugin's time-slicing: each GPU is advertised as this many nvidia.com/gpu.
    time_slicing_replicas: Annotated[StrictInt, Field(ge=1, le=64)] = 1
    # Time-slicing's (or MPS's) renameByDefault: the shared GPUs are advertised as nvidia.com/gpu.shared.
    rename_by_default: bool = False
    # The device plugin's MIG strategy: "single" advertises slices as nvidia.com/gpu, "mixed" as
    # nvidia.com/mig-<profile>, one resource per profile (what the NVIDIA GPU Operator uses for mixed sizes).
    mig_strategy: Literal["single", "mixed"] = "single"
    # The GPUs reach pods through Dynamic Resource Allocation: the NVIDIA DRA driver (gpu.nvidia.com)
    # publishes each one as a device in the node's ResourceSlice, and the device plugin advertises none.
    dra: bool = False

    @model_validator(mode="after")
    def _dra_whole_gpus(self) -> "FleetNode":
        """The simulated DRA driver publishes whole GPUs only (its MIG and time-slicing are not modelled)."""
        if self.dra and (self.time_slicing_replicas > 1 or any(gpu.mig is not None and gpu.mig.enabled for gpu in self.gpus)):
            raise ValueError(
                f"node {self.name}: dra publishes whole GPUs only; remove timeSlicingReplicas and MIG from its GPUs, "
                "or set dra: false"
            )
        return self

    @field_validator("name")
    @classmethod
    def _dns_label(cls, name: str) -> str:
        if not _DNS_LABEL.match(name):
            raise ValueError(f"{name!r} is not a valid node name; use lower-case letters, digits and '-', at most 63 characters")
        return name

    @field_validator("gpus")
    @classmethod
    def _distinct_bus_ids(cls, gpus: list[Gpu]) -> list[Gpu]:
        """Two GPUs of one host cannot sit at one PCI address (omitted ids count as derived ones)."""
        first_at: dict[str, int] = {}
        for index, gpu in enumerate(gpus):
            bus_id = gpu.pci_bus_id if gpu.pci_bus_id is not None else _derived_bus_id(index)
            if bus_id in first_at:
                raise ValueError(
                    f"gpus[{first_at[bus_id]}] and gpus[{index}] are both at pciBusId {bus_id}; "
                    "give every GPU of a node its own bus id (an omitted one is 0000:<index + 1>:00.0)"
                )
            first_at[bus_id] = index
        _check_shared_links(gpus)
        return gpus

    def gpu_uuid(self, index: int) -> str:
        """The profile's uuid for GPU ``index`` or, if omitted, one derived from node name and index."""
        given = self.gpus[index].uuid
        return given if given is not None else f"GPU-{uuid.uuid5(_UUID_NAMESPACE, f'{self.name}/{index}')}"

    def gpu_pci_bus_id(self, index: int) -> str:
        given = self.gpus[index].pci_bus_id
        return given if given is not None else _derived_bus_id(index)

    @property
    def gpu_units(self) -> int:
        return sum(gpu.schedulable_units for gpu in self.gpus)

    def advertised(self) -> dict[str, int]:
        """The GPU resources the NVIDIA device plugin advertises on this node, by name: whole or
        time-sliced GPUs (``nvidia.com/gpu``, or ``nvidia.com/gpu.shared`` when renamed), MIG slices
        as ``nvidia.com/gpu`` ("single") or one ``nvidia.com/mig-<profile>`` per profile ("mixed")."""
        if self.dra:
            return {}  # the DRA driver publishes them in ResourceSlices instead (``dra_devices``)
        shared = self.rename_by_default and self.time_slicing_replicas > 1
        whole = SHARED_GPU_RESOURCE if shared else GPU_RESOURCE
        resources: dict[str, int] = {}
        for gpu in self.gpus:
            if self.mig_strategy == "mixed" and gpu.mig is not None and gpu.mig.enabled:
                for device in gpu.mig.devices:
                    name = f"{MIG_RESOURCE_PREFIX}{device.profile}"
                    resources[name] = resources.get(name, 0) + device.count
            else:
                resources[whole] = resources.get(whole, 0) + gpu.schedulable_units * self.time_slicing_replicas
        return resources

    def dra_devices(self) -> list[dict[str, Any]]:
        """The node's GPUs as the NVIDIA DRA driver publishes them in a ResourceSlice's ``devices``:
        named ``gpu-<index>``, with its attributes (in the driver's domain unless qualified) and capacity."""
        return [
            {
                "name": f"gpu-{index}",
                "attributes": {
                    "type": {"string": "gpu"},
                    "uuid": {"string": self.gpu_uuid(index)},
                    "productName": {"string": gpu.product},
                    "resource.kubernetes.io/pciBusID": {"string": self.gpu_pci_bus_id(index)},
                    "resource.kubernetes.io/pcieRoot": {"string": f"pci{self.gpu_pci_bus_id(index)[:4]}:00"},
                },
                "capacity": {"memory": {"value": f"{gpu.memory_mib}Mi"}},
            }
            for index, gpu in enumerate(self.gpus)
        ]

    def mig_profiles(self) -> dict[str, int]:
        """MIG profile -> memory in MiB of its slices, on the node's MIG-enabled GPUs."""
        return {
            device.profile: device.memory_mib
            for gpu in self.gpus
            if gpu.mig is not None and gpu.mig.enabled
            for device in gpu.mig.devices
        }


def _check_shared_links(gpus: list[Gpu]) -> None:
    """Links that share a name are one link: the same speeds, at the same place below the root port,
    with the same links above them (what sits above a shared link is shared as well)."""
    first: dict[str, tuple[int, int, PcieLink, list[PcieLink]]] = {}
    for index, gpu in enumerate(gpus):
        for depth, link in enumerate(gpu.links):
            if link.shared is None:
                continue
            above = gpu.links[depth + 1 :]
            where = f"gpus[{index}].links[{depth}]"
            if any(upper.shared is None for upper in above):
                raise ValueError(
                    f"{where} is shared ({link.shared}) but a link above it is not; every link above a shared link "
                    "carries the traffic of all GPUs below it, so give it a shared name too"
                )
            if link.shared not in first:
                first[link.shared] = (index, depth, link, above)
                continue
            other, other_depth, seen, seen_above = first[link.shared]
            same = (link.current, link.device, link.port) == (seen.current, seen.device, seen.port)
            if not same or [u.shared for u in above] != [u.shared for u in seen_above]:
                raise ValueError(
                    f"{where} and gpus[{other}].links[{other_depth}] are both shared link {link.shared!r} but differ "
                    "in their speeds or in the links above them; a shared link is one link, so describe it the same way"
                )


def _derived_bus_id(index: int) -> str:
    """The bus id of GPU ``index`` when the profile gives none: one bus per GPU, from 01."""
    return f"0000:{index + 1:02x}:00.0"


class FleetMetadata(_Model):
    name: str
    description: str = ""


class FleetProfile(_Model):
    """A named set of nodes."""

    api_version: Literal["egpu-operator.io/v1alpha1"]
    kind: Literal["FleetProfile"]
    metadata: FleetMetadata
    nodes: Annotated[list[FleetNode], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen: set[str] = set()
        for node in self.nodes:
            if node.name in seen:
                raise ValueError(f"node name {node.name!r} appears twice; node names must be unique")
            seen.add(node.name)
        uuids = Counter(node.gpu_uuid(i) for node in self.nodes for i in range(len(node.gpus)))
        duplicates = sorted(u for u, seen_times in uuids.items() if seen_times > 1)
        if duplicates:
            raise ValueError(f"GPU uuid {duplicates[0]} appears twice; every GPU needs its own uuid")
        return self

    def node(self, name: str) -> FleetNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"fleet {self.metadata.name!r} has no node {name!r}")


def parse_fleet(document: Any, source: str = "fleet profile") -> FleetProfile:
    """Validate an already-parsed YAML document; ``source`` names it in error messages."""
    if not isinstance(document, Mapping):
        raise FleetProfileError(
            f"{source}: expected a mapping with apiVersion, kind, metadata and nodes, got {type(document).__name__}"
        )
    try:
        return FleetProfile.model_validate(document)
    except ValidationError as error:
        problems = [_describe(problem, document) for problem in error.errors()]
        raise FleetProfileError("\n".join(f"{source}: {problem}" for problem in problems)) from None


def load_fleet(path: str | Path = DEFAULT_FLEET) -> FleetProfile:
    """Read and validate a fleet profile file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise FleetProfileError(f"fleet profile {path}: cannot read it ({error.strerror}); check the path") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "syntax error"
        raise FleetProfileError(f"fleet profile {path}: not valid YAML{where}: {problem}") from None
    return parse_fleet(document, f"fleet profile {path}")


def _describe(problem: Mapping[str, Any], document: Any) -> str:
    """One pydantic error as 'path: what is wrong and how to fix it'."""
    where = _location(problem["loc"], document)
    kind = problem["type"]
    if kind == "missing":
        return f"{where}: is required; add it"
    if kind == "extra_forbidden":
        return f"{where}: is not a known field; remove it or check its spelling"
    if kind == "literal_error":
        return f"{where}: {problem['msg'].replace('Input should be', 'must be')}"
    if kind == "int_type":
        value = problem.get("input")
        if isinstance(value, bool):
            return f"{where}: {str(value).lower()} is a boolean, not a number; write a whole number"
        return f"{where}: {value!r} is not a whole number; write one without quotes, units or a decimal point"
    unit = " (the value is in MiB)" if kind == "less_than_equal" and str(problem["loc"][-1]).endswith("Mib") else ""
    message = str(problem["msg"]).removeprefix("Value error, ") + unit
    # Pydantic capitalises its sentences; ours continue after a colon. Leave acronyms (MIG, GPU) be.
    if message[:2].istitle():
        message = message[0].lower() + message[1:]
    return f"{where}: {message}"


def _location(loc: tuple[Any, ...], document: Any) -> str:
    """Render a pydantic location as a path; name list entries that have a ``name`` key."""
    parts: list[str] = []
    node = document
    for step in loc:
        if isinstance(step, int):
            label = f"[{step}]"
            if isinstance(node, list) and step < len(node):
                node = node[step]
                if isinstance(node, Mapping) and isinstance(node.get("name"), str):
                    label = f"[{step}] ({node['name']})"
            parts.append(label)
        else:
            parts.append(f".{step}" if parts else str(step))
            node = node.get(step) if isinstance(node, Mapping) else None
    return "".join(parts) or "the document"
