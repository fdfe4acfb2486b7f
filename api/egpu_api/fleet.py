"""The fleet-profile format: a YAML description of GPU nodes as NVML and sysfs would report them.

One format serves three readers: the local cluster creates one fake (KWOK) node per entry,
the node agent's fake NVML backend answers NVML calls from it, and the demo prints it.
So it records what the hardware reports, not what we conclude: each GPU's PCIe path as a
list of links from the GPU up to the root port, each with the speed it trained at and what
both ends support; the power limit and its constraints; MIG and virtualization mode.

A profile that does not validate raises ``FleetProfileError`` whose message names every bad
field by path (``nodes[2].gpus[0].power.minLimitWatts``) and says how to fix it.
"""

import re
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from egpu_api.keys import API_GROUP, API_VERSION
from egpu_api.pcie import MAX_GENERATION, VALID_WIDTHS, LinkSpeed, bottleneck

FLEET_API_VERSION: Final = f"{API_GROUP}/{API_VERSION}"
FLEET_KIND: Final = "FleetProfile"
DEFAULT_FLEET: Final = Path(__file__).parent / "fleets" / "edge-default.yaml"

# Kubernetes node names are DNS-1123 subdomains; we keep to labels so the name fits in a label value.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_PCI_BUS_ID = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_MIG_PROFILE = re.compile(r"^[1-8]g\.[0-9]+gb(\+me)?$")
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

    generation: Annotated[int, Field(ge=1, le=MAX_GENERATION)]
    width: int

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
    """

    description: str = ""
    current: LinkCapability
    device: LinkCapability
    port: LinkCapability

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

    limit_watts: Annotated[int, Field(gt=0)]
    default_limit_watts: Annotated[int, Field(gt=0)]
    min_limit_watts: Annotated[int, Field(gt=0)]
    max_limit_watts: Annotated[int, Field(gt=0)]

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
    memory_mib: Annotated[int, Field(gt=0)]
    count: Annotated[int, Field(ge=1, le=7)] = 1

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

    product: Annotated[str, Field(min_length=1)]
    uuid: str | None = None
    pci_bus_id: str | None = None
    memory_mib: Annotated[int, Field(gt=0)]
    # Ordered from the GPU's own link (what NVML reports) up to the link into the root port.
    links: Annotated[list[PcieLink], Field(min_length=1)]
    # None where NVML cannot read or set power limits (e.g. inside a vGPU guest).
    power: PowerLimits | None
    virtualization_mode: VirtualizationMode = "none"
    mig: MigConfig | None = None

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
    cpu_cores: Annotated[int, Field(ge=1)]
    memory_mib: Annotated[int, Field(gt=0)]
    # What the host's power path can feed the GPUs (dock PSU, slot power); informational.
    gpu_power_budget_watts: Annotated[int, Field(gt=0)] | None = None


class FleetNode(_Model):
    """One Kubernetes node: a host and its GPUs."""

    name: str
    host: Host
    gpus: list[Gpu]

    @field_validator("name")
    @classmethod
    def _dns_label(cls, name: str) -> str:
        if not _DNS_LABEL.match(name):
            raise ValueError(f"{name!r} is not a valid node name; use lower-case letters, digits and '-', at most 63 characters")
        return name

    def gpu_uuid(self, index: int) -> str:
        """The profile's uuid for GPU ``index`` or, if omitted, one derived from node name and index."""
        given = self.gpus[index].uuid
        return given if given is not None else f"GPU-{uuid.uuid5(_UUID_NAMESPACE, f'{self.name}/{index}')}"

    def gpu_pci_bus_id(self, index: int) -> str:
        given = self.gpus[index].pci_bus_id
        return given if given is not None else f"0000:{index + 1:02x}:00.0"

    @property
    def gpu_units(self) -> int:
        return sum(gpu.schedulable_units for gpu in self.gpus)


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
        raise FleetProfileError(f"{source}: " + "; ".join(problems)) from None


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
    message = str(problem["msg"]).removeprefix("Value error, ")
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
