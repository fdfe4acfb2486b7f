"""The InferenceDeployment API (egpu-operator.io/v1alpha1): one model, whole on one GPU per replica.

These models are the single source of the CRD: ``egpu_api.crd`` turns them into the
structural OpenAPI schema in ``crds/`` (every field described, cross-field rules in CEL), and
the operator parses objects with them. Field names are the camelCase Kubernetes users expect.
"""

import unicodedata
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from egpu_api.podtemplate import pod_template_schema

GpuModeName = Literal["bare-metal", "passthrough", "vgpu", "mig"]

# A quantity's syntax is checked by CEL's isQuantity (apimachinery's resource.Quantity grammar),
# not by an OpenAPI pattern: a pattern's error prints the regular expression, where a user who
# wrote "13GB" needs to read "use 13G or 13Gi".
_QUANTITY: dict[str, Any] = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "x-kubernetes-int-or-string": True,
    # Bounds the CEL rules' cost estimate; no quantity a person writes comes near it.
    "maxLength": 64,
}
Quantity = Annotated[int | str, Field(json_schema_extra=_QUANTITY)]
# Byte units as people write them (GB, GiB, gb, kB, ...): Kubernetes spells them G or Gi, k or Ki.
_PORT: dict[str, Any] = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "x-kubernetes-int-or-string": True,
    "maxLength": 15,
}
_BYTE_UNIT = "^[0-9]+([.][0-9]+)?[kKmMgGtTpPeE]i?[bB]$"


def cel_rules(*rules: tuple[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in rules]}


def quantity_rules(field: str, positive: bool) -> list[dict[str, Any]]:
    """CEL rules for the quantity ``field`` of this object, each reported at the field itself.

    The second and third rules run only on a well-formed quantity, so a malformed one gets one message.
    """
    value = f"string(self.{field})"
    unit = f"{value}.find('[kKmMgGtTpPeE]').upperAscii()"
    number = f"{value}.find('^[0-9]+([.][0-9]+)?')"
    wording = (
        f"{value}.matches('{_BYTE_UNIT}') "
        f"? 'model.{field} \"' + {value} + '\" is not a Kubernetes quantity: use ' + {number} "
        f"+ ({unit} == 'K' ? 'k' : {unit}) + ' or ' + {number} + {unit} + 'i' "
        f": 'model.{field} \"' + {value} + '\" is not a Kubernetes quantity; write it like 16Gi, 6G or 7000000000'"
    )
    sign = f"quantity({value}).isGreaterThan(quantity('0'))" if positive else f"!quantity({value}).isLessThan(quantity('0'))"
    guard = "" if field == "size" else f"!has(self.{field}) || "
    return [
        {"rule": f"{guard}isQuantity({value})", "messageExpression": wording, "fieldPath": f".{field}"},
        {
            "rule": f"{guard}!isQuantity({value}) || {sign}",
            "message": f"model.{field} must be a positive quantity, e.g. 16Gi"
            if positive
            else f"model.{field} must not be negative",
            "fieldPath": f".{field}",
        },
        {
            # isInteger is false for a fraction ("100m" would be a 1-byte model) and past an int64 (8Ei).
            "rule": f"{guard}!isQuantity({value}) || quantity({value}).isInteger()",
            "message": f"model.{field} must be a whole number of bytes below 8Ei, e.g. 16Gi or 6000000000",
            "fieldPath": f".{field}",
        },
    ]


def printable_rule(field: str, shown: str) -> dict[str, Any]:
    """A CEL rule refusing control characters in the string ``field`` of this object (``shown``
    names it for people). ``kubectl get`` prints printer columns as they are, so a newline or a
    terminal escape there rewrites what an administrator sees."""
    return {
        "rule": f"!self.{field}.matches(r'\\p{{Cc}}')",
        "fieldPath": f".{field}",
        "message": f"{shown} {CONTROL_CHARACTERS_FIX}",
    }


CONTROL_CHARACTERS_FIX = (
    "must not contain control characters (newlines, tabs, terminal escape sequences): kubectl get prints it as it is; "
    "use printable text"
)


def _printable(value: str) -> str:
    if any(unicodedata.category(character) == "Cc" for character in value):
        raise ValueError(CONTROL_CHARACTERS_FIX)
    return value


#: A string shown in ``kubectl get`` columns: no control characters (``printable_rule`` in the CRD).
Printable = Annotated[str, AfterValidator(_printable)]

_MODEL_RULES: dict[str, Any] = {
    "x-kubernetes-validations": [
        printable_rule("name", "model.name"),
        *quantity_rules("size", positive=True),
        *quantity_rules("vramOverhead", positive=False),
    ]
}


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class ModelSource(ApiModel):
    """Where the weights come from: the node's local model cache, or a remote source read at a known rate."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            (
                "self.location == 'Remote' ? has(self.readMBps) : !has(self.readMBps)",
                "model.source.readMBps is required for location Remote (the rate one load reads at, in MB/s) "
                "and not allowed for NodeCache, whose rate the node agent publishes",
            )
        )
    )

    location: Literal["NodeCache", "Remote"] = Field(
        default="NodeCache",
        description="NodeCache: a path on the node (an SD card, a USB SSD, an NVMe disk); Remote: object storage, "
        "NFS, a model hub mirror.",
    )
    read_m_bps: Annotated[int, Field(ge=1, le=10_000_000)] | None = Field(
        default=None,
        alias="readMBps",
        description="For Remote: the rate one load reads the weights at, in MB/s (10^6 bytes/s).",
    )


class ModelSpec(ApiModel):
    """The model every replica loads whole onto one GPU."""

    model_config = ConfigDict(json_schema_extra=_MODEL_RULES)

    name: Annotated[
        Printable, Field(min_length=1, max_length=253, description="Model name, for people and printer columns; printable text.")
    ]
    size: Quantity = Field(
        description="Bytes that cross the PCIe link at load time (the weights), as a quantity: 18Gi, 6G, 7000000000."
    )
    vram_overhead: Quantity = Field(
        default="1Gi",
        description="GPU memory needed beyond the weights (runtime, activations, KV cache). Default 1Gi.",
    )
    source: ModelSource | None = Field(
        default=None,
        description="Where the weights are read from at load time. Default: the node's model cache, at the read rate "
        "its node agent publishes (egpu-operator.io/storage-read-mbps).",
    )
    host_copy: Literal["Pageable", "Pinned"] = Field(
        default="Pageable",
        description="How the server copies weights to the GPU: Pageable (plain host memory, what most servers do) or "
        "Pinned (page-locked staging buffers). Picks which of the node's measured copy rates bounds the load.",
    )


class PlacementSpec(ApiModel):
    """Where replicas may run. Set exactly one of maxLoadSeconds or minBandwidthMBps."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            (
                "has(self.maxLoadSeconds) != has(self.minBandwidthMBps)",
                "set exactly one of placement.maxLoadSeconds or placement.minBandwidthMBps",
            )
        )
    )

    max_load_seconds: Annotated[int, Field(ge=1, le=86400)] | None = Field(
        default=None,
        description="Load-time budget: only nodes whose link moves model.size within this many seconds qualify.",
    )
    min_bandwidth_m_bps: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        alias="minBandwidthMBps",
        description="Alternative to maxLoadSeconds: the least effective host-to-GPU bandwidth a node needs, in MB/s.",
    )
    allowed_modes: Annotated[list[GpuModeName], Field(min_length=1, max_length=4)] = Field(
        default=["bare-metal", "passthrough"],
        description="GPU modes a replica may use: bare-metal, passthrough, vgpu (a vGPU slice), mig (a MIG slice).",
    )
    gpu_allocation: Literal["DevicePlugin", "DRA"] = Field(
        default="DevicePlugin",
        description=(
            "How a replica gets its GPU: DevicePlugin (an extended resource such as nvidia.com/gpu, a shared GPU or a "
            "MIG slice) or DRA (a resource.k8s.io/v1 ResourceClaim for the gpu.nvidia.com device placement chose, on "
            "nodes whose DRA driver publishes ResourceSlices)."
        ),
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Labels a node must also carry, as in a pod's nodeSelector."
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Tolerations added to every replica, as in a pod's tolerations.",
        json_schema_extra={"items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
    )


class PowerSpec(ApiModel):
    """The power limit to set on each replica's GPU. Set exactly one field."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            (
                "has(self.limitWatts) != has(self.fractionOfDefault)",
                "set exactly one of power.limitWatts or power.fractionOfDefault",
            )
        )
    )

    limit_watts: Annotated[int, Field(ge=1, le=2000)] | None = Field(
        default=None, description="Power limit in watts; the node agent clamps it to what the GPU allows."
    )
    fraction_of_default: Annotated[float, Field(gt=0, le=1)] | None = Field(
        default=None, description="Power limit as a fraction of the GPU's default limit, in (0, 1]."
    )


class DisruptionSpec(ApiModel):
    """What GPU maintenance may do to this deployment."""

    min_available: Annotated[int, Field(ge=0)] = Field(
        default=1, description="Replicas that must stay Ready while a node is drained for maintenance."
    )


class ServicePort(ApiModel):
    """One port of the deployment's Service, as in a Service's ports."""

    name: Annotated[str, Field(max_length=63, pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")] | None = Field(
        default=None, description="Port name (a DNS label, as in a Service); required when there is more than one port."
    )
    port: Annotated[int, Field(ge=1, le=65535)] = Field(description="Port the Service listens on.")
    target_port: Annotated[int | str, Field(json_schema_extra=_PORT)] | None = Field(
        default=None, description="Container port number or name the traffic goes to; default: the same as port."
    )
    protocol: Literal["TCP", "UDP", "SCTP"] = Field(default="TCP", description="TCP (default), UDP or SCTP.")


class ServiceSpec(ApiModel):
    """A ClusterIP Service the operator creates, owns and keeps in step, selecting exactly this
    deployment's replica pods: its endpoints are the Ready replicas."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            (
                "self.ports.size() == 1 || self.ports.all(p, has(p.name))",
                "service.ports: name every port when there is more than one",
            ),
            (
                "self.ports.all(p, self.ports.exists_one(q, q.port == p.port && q.protocol == p.protocol))",
                "service.ports: each port and protocol may appear only once",
            ),
        )
    )

    ports: Annotated[list[ServicePort], Field(min_length=1, max_length=16)] = Field(
        description="Ports of the Service, as in a Service's spec.ports."
    )


class InferenceDeploymentSpec(ApiModel):
    """Desired state: how many whole-model replicas, of which model, placed how."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            # Zero replicas are always allowed, so `kubectl scale --replicas=0` works: the budget then
            # only blocks evictions, and with no pod there is nothing to evict.
            (
                "!has(self.disruption) || self.replicas == 0 || self.disruption.minAvailable <= self.replicas",
                "disruption.minAvailable cannot exceed replicas (except at 0 replicas)",
            )
        )
    )

    replicas: Annotated[int, Field(ge=0, le=1000)] = Field(default=1, description="Number of replicas, one GPU each.")
    model: ModelSpec = Field(description="The model to serve.")
    placement: PlacementSpec = Field(description="Where replicas may run.")
    power: PowerSpec | None = Field(default=None, description="Power limit for each replica's GPU; unset leaves it alone.")
    disruption: DisruptionSpec | None = Field(default=None, description="Limits for GPU maintenance drains.")
    service: ServiceSpec | None = Field(
        default=None,
        description="A Service named like the deployment whose endpoints are its Ready replicas; unset: none "
        "(and one the operator made is deleted).",
    )
    # A plain dict to the operator (it copies the template into each pod); the schema declares only
    # the fields the admission rules read, see egpu_api.podtemplate.
    template: dict[str, Any] = Field(
        description="Pod template of a replica (metadata and spec, as in a Deployment). The operator adds the GPU "
        "request, node affinity and the startupProbe budget. Rejected: nodeName, host namespaces, hostPath "
        "volumes, privileged containers, capabilities and other settings beyond the Pod Security baseline level.",
        json_schema_extra=pod_template_schema(),
    )


class Condition(ApiModel):
    """A Kubernetes API convention condition."""

    type: str = Field(description="Condition type: Placed, Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason for the last transition.")
    message: str = Field(description="Human-readable detail.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="The .metadata.generation this was computed for.")


class PowerStatus(ApiModel):
    requested_watts: int | None = Field(default=None, description="Limit the operator asked the node agent for.")
    applied_watts: int | None = Field(default=None, description="Limit NVML enforces now, as the node agent reports.")
    message: str | None = Field(default=None, description="Why the applied limit differs, if it does.")


class ReplicaPlacement(ApiModel):
    """Where one replica runs and what its link costs."""

    replica: int = Field(description="Replica index.")
    pod: str = Field(description="Pod name.")
    node: str = Field(description="Node name.")
    gpu: str | None = Field(default=None, description="UUID of the GPU the power limit is applied to, when known.")
    link_generation: int | None = Field(default=None, description="PCIe generation of the node's bottleneck hop.")
    link_width: int | None = Field(default=None, description="PCIe lanes of the node's bottleneck hop.")
    bandwidth_m_bps: int | None = Field(
        default=None, alias="bandwidthMBps", description="Effective host-to-GPU bandwidth in MB/s."
    )
    estimated_load_seconds: float | None = Field(
        default=None,
        description="model.size over the slowest stage of the load (storage, host copy, PCIe links, shared links "
        "divided among the loads on them when this replica was placed), plus a fixed start-up term, in seconds.",
    )
    load_bottleneck: str | None = Field(
        default=None, description="The stage that bounds the load and its rate, e.g. 'storage 90 MB/s'."
    )
    ready: bool = Field(default=False, description="Whether the pod is Ready (model loaded).")
    power: PowerStatus | None = Field(default=None, description="Power limit requested and applied.")


class InferenceDeploymentStatus(ApiModel):
    """Observed state, written by the operator."""

    observed_generation: int | None = Field(default=None, description="The .metadata.generation last reconciled.")
    replicas: int = Field(default=0, description="Replica pods that exist.")
    ready_replicas: int = Field(default=0, description="Replica pods that are Ready.")
    selector: str | None = Field(default=None, description="Label selector of the replica pods (for the scale subresource).")
    worst_load_seconds: float | None = Field(default=None, description="Largest estimated load time over the replicas.")
    placements: list[ReplicaPlacement] = Field(default_factory=list, description="One entry per replica.")
    conditions: list[Condition] = Field(default_factory=list, description="Placed and Ready, per API conventions.")
    kopf: dict[str, Any] = Field(
        default_factory=dict,
        description="The operator framework's own progress records.",
        json_schema_extra={"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    )
