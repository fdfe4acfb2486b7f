"""The GPUMaintenance API (egpu-operator.io/v1alpha1, cluster-scoped): drain one node's GPUs for service.

A GPU in a passthrough VM cannot live-migrate and an eGPU dock must be re-seated by hand, so
GPU maintenance is a planned drain. One GPUMaintenance names a node; the operator cordons
it, moves each InferenceDeployment replica by starting a replacement elsewhere first and
evicting the old pod only once the replacement is Ready, waits for other GPU pods (or evicts
them, when told to), and reports ``Ready`` when the node holds no GPU workload. Setting
``spec.completed`` (or deleting the object) returns the node to service.

Defaults are the cautious ones an SRE expects from ``kubectl drain``: bare pods and Jobs are
waited for, not evicted (``kubectl drain`` refuses them without ``--force``), and a drain that
does not finish within ``DEFAULT_DRAIN_TIMEOUT_SECONDS`` fails, leaving the node cordoned for a
human, instead of waiting forever.

Phases: Pending -> Cordoned -> Evacuating -> Ready -> Completed, or Failed with a reason.
"""

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from egpu_api.inference import ApiModel, Condition

Phase = Literal["Pending", "Cordoned", "Evacuating", "Ready", "Completed", "Failed"]
PHASES: tuple[Phase, ...] = ("Pending", "Cordoned", "Evacuating", "Ready", "Completed", "Failed")
#: Phases that hold one of the cluster's parallel-maintenance slots.
ACTIVE_PHASES: frozenset[str] = frozenset({"Cordoned", "Evacuating", "Ready"})
TERMINAL_PHASES: frozenset[str] = frozenset({"Completed", "Failed"})

UnmanagedPodPolicy = Literal["Evict", "Wait"]
CapacityPolicy = Literal["WaitForCapacity", "AllowReducedCapacity"]

#: One hour: long enough for a replacement to load a large model over a slow edge link, short
#: enough that a drain stuck on a pod nobody watches is noticed the same shift.
DEFAULT_DRAIN_TIMEOUT_SECONDS = 3600


class GPUMaintenanceSpec(ApiModel):
    """Which node to drain for GPU service, why, and how patiently."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.nodeName == oldSelf.nodeName",
                    "message": "nodeName is immutable; create another GPUMaintenance for another node",
                },
                # A maintenance born completed would end without ever draining the node, and
                # report it evacuated: completion is something that happens to a started one.
                {
                    "rule": "oldSelf.hasValue() || !has(self.completed) || !self.completed",
                    "optionalOldSelf": True,
                    "fieldPath": ".completed",
                    "message": "spec.completed cannot be true when a GPUMaintenance is created: create it without "
                    "completed, and set completed=true once the service is done",
                },
            ]
        }
    )

    node_name: Annotated[str, Field(min_length=1, max_length=253)] = Field(description="The node whose GPUs need service.")
    reason: Annotated[str, Field(min_length=1, max_length=1024)] = Field(
        description="Why, for people: 'reseat eGPU dock', 'driver 580 upgrade', 'GPU lost (Xid 79)'."
    )
    drain_timeout_seconds: Annotated[int, Field(ge=1)] = Field(
        default=DEFAULT_DRAIN_TIMEOUT_SECONDS,
        description="Fail with reason DrainTimeout (leaving the node cordoned for a human) if the node is not Ready "
        f"this many seconds after the drain starts. Default {DEFAULT_DRAIN_TIMEOUT_SECONDS} (one hour); raise it "
        "for a longer wait.",
    )
    unmanaged_gpu_pods: UnmanagedPodPolicy = Field(
        default="Wait",
        description="GPU pods egpu-operator does not manage (bare pods, Jobs): Wait for them to finish (the default, "
        "as kubectl drain without --force; status.unmanagedGpuPods names them) or Evict them through the Eviction "
        "API, honouring PodDisruptionBudgets. DaemonSet pods are always left alone; nothing is ever force-deleted.",
    )
    capacity_policy: CapacityPolicy = Field(
        default="WaitForCapacity",
        description="When a replica has no other adequate node: WaitForCapacity keeps it serving here until one "
        "appears; AllowReducedCapacity evicts it anyway, as far as its PodDisruptionBudget allows.",
    )
    completed: bool = Field(
        default=False,
        description="Set true when the service is done: the node is uncordoned (unless it was cordoned before) "
        "and the maintenance ends in Completed. Deleting the object does the same.",
    )


class MovedReplica(ApiModel):
    """One replica moved off the node, and where to."""

    deployment: str = Field(description="namespace/name of the InferenceDeployment.")
    replica: int = Field(description="Replica index.")
    from_pod: str = Field(description="The pod evicted from the node in maintenance.")
    to_pod: str | None = Field(default=None, description="The replacement pod, if one was Ready before the eviction.")
    to_node: str | None = Field(default=None, description="Node of the replacement pod.")


class GPUMaintenanceStatus(ApiModel):
    """Observed state, written by the operator."""

    phase: Phase = Field(default="Pending", description="Pending, Cordoned, Evacuating, Ready, Completed or Failed.")
    message: str = Field(default="", description="What the maintenance is doing or waiting for, in one line.")
    node_was_cordoned: bool | None = Field(
        default=None, description="Whether an administrator had cordoned the node before; such a node stays cordoned."
    )
    started_at: str | None = Field(default=None, description="When the node was cordoned (RFC 3339).")
    ready_at: str | None = Field(default=None, description="When the node first held no GPU workload (RFC 3339).")
    completed_at: str | None = Field(default=None, description="When the node returned to service (RFC 3339).")
    planned_ready_at: str | None = Field(
        default=None,
        description="While replacements load: when the last of them should be Ready, from each one's creation time "
        "and load estimate (RFC 3339). Replicas waiting for a shared link to free up are not in it yet.",
    )
    moved: list[MovedReplica] = Field(default_factory=list, description="InferenceDeployment replicas moved off the node.")
    evicted: list[str] = Field(
        default_factory=list,
        description="GPU pods evicted without a replacement (namespace/name): pods egpu-operator does not "
        "manage, and replicas dropped under capacityPolicy AllowReducedCapacity.",
    )
    unmanaged_gpu_pods: list[str] = Field(
        default_factory=list,
        description="GPU pods egpu-operator does not manage that the drain waits for (namespace/name), under "
        "unmanagedGpuPods: Wait; set spec.unmanagedGpuPods to Evict to evict them instead.",
    )
    observed_generation: int | None = Field(default=None, description="The .metadata.generation last reconciled.")
    conditions: list[Condition] = Field(
        default_factory=list, description="Started, Cordoned, Evacuated and Failed, per API conventions."
    )
