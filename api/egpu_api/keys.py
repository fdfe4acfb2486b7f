"""Names on the Kubernetes wire: the API group and the prefix of every label and annotation.

Keys are built from ``PREFIX`` here and only here, so a test can assert each key literally
and a rename is one edit.
"""

from typing import Final

API_GROUP: Final = "egpu-operator.io"
API_VERSION: Final = "v1alpha1"

#: Every label and annotation this project writes starts with this prefix.
PREFIX: Final = f"{API_GROUP}/"

#: Names the fleet-profile node a simulated (KWOK) node was created from.
FLEET_NODE_LABEL: Final = f"{PREFIX}fleet-node"

#: KWOK's own marker for nodes its controller should simulate (owned by KWOK, not us).
KWOK_NODE_ANNOTATION: Final = "kwok.x-k8s.io/node"
KWOK_NODE_ANNOTATION_VALUE: Final = "fake"

#: Label Node Feature Discovery sets on hosts with an NVIDIA PCI device (vendor 10de).
NFD_NVIDIA_PCI_LABEL: Final = "feature.node.kubernetes.io/pci-10de.present"

#: Labels NVIDIA GPU Feature Discovery (GFD, part of the NVIDIA GPU Operator) publishes; the agent reads
#: them and compares them with NVML, never writes them. Product: NVML's name with spaces as dashes
#: (a ``-SHARED`` suffix with time-slicing, ``-MIG-<profile>`` with the MIG "single" strategy);
#: memory in MiB; count of GPUs (or MIG devices with "single").
GFD_PRODUCT_LABEL: Final = "nvidia.com/gpu.product"
GFD_MEMORY_MIB_LABEL: Final = "nvidia.com/gpu.memory"
GFD_COUNT_LABEL: Final = "nvidia.com/gpu.count"
GFD_MIG_STRATEGY_LABEL: Final = "nvidia.com/mig.strategy"
GFD_FAMILY_LABEL: Final = "nvidia.com/gpu.family"

#: Extended resource the NVIDIA device plugin advertises, one per GPU (or MIG slice, "single" strategy).
GPU_RESOURCE: Final = "nvidia.com/gpu"
#: What time-slicing or MPS advertises instead with ``renameByDefault: true``: shared GPUs, one per replica.
SHARED_GPU_RESOURCE: Final = "nvidia.com/gpu.shared"
#: MIG "mixed" strategy: one resource per slice profile, ``nvidia.com/mig-3g.40gb``.
MIG_RESOURCE_PREFIX: Final = "nvidia.com/mig-"
#: GPU Feature Discovery's per-profile memory label (MiB) under the "mixed" strategy: ``nvidia.com/mig-3g.40gb.memory``.
GFD_MIG_MEMORY_SUFFIX: Final = ".memory"


#: Dynamic Resource Allocation (resource.k8s.io/v1): the NVIDIA DRA driver publishes each GPU as a
#: device of this driver in the node's ResourceSlices, and its DeviceClass of the same name selects them.
DRA_GPU_DRIVER: Final = "gpu.nvidia.com"
DRA_GPU_DEVICE_CLASS: Final = "gpu.nvidia.com"
#: The device attribute (in the driver's domain) that names one GPU: a replica's claim selects on it.
DRA_UUID_ATTRIBUTE: Final = "uuid"
#: On a replica's ResourceClaim: ``<driver>/<pool>/<device>`` placement chose, held until the
#: scheduler allocates it (the claim's status then says so itself).
DRA_DEVICE_ANNOTATION: Final = f"{PREFIX}dra-device"
#: The name of the claim in the replica pod's ``spec.resourceClaims`` and its container's ``resources.claims``.
DRA_POD_CLAIM_NAME: Final = "gpu"


#: The shared-GPU resource names a cluster uses unless configured otherwise (the device plugin's
#: ``rename`` of a time-sliced or MPS resource may pick any name; the operator's
#: ``--shared-gpu-resources`` lists them).
SHARED_GPU_RESOURCES: Final = (SHARED_GPU_RESOURCE,)


def is_gpu_resource(name: str, shared: tuple[str, ...] = SHARED_GPU_RESOURCES) -> bool:
    """Whether an extended resource is a GPU or a slice of one, in any form the NVIDIA device plugin
    advertises: whole (``nvidia.com/gpu``), ``shared`` under a renamed resource, or a MIG "mixed" slice."""
    return name == GPU_RESOURCE or name in shared or name.startswith(MIG_RESOURCE_PREFIX)


# -- Node labels published by the node agent (contract version LABEL_SCHEMA) ------------------
#
# Node-level labels describe the node's WORST schedulable GPU (least VRAM, slowest link, lowest
# power cap, worst health): the device plugin hands a pod any free GPU, so a label must not
# promise more than the weakest one delivers. Per-GPU detail is in the GPUS_ANNOTATION JSON.
# Numeric values are plain base-10 integers so nodeAffinity Gt/Lt can select on them.

#: Version of the label contract below; bumped (and both versions documented) on any incompatible change.
LABEL_SCHEMA: Final = "v1"
LABEL_SCHEMA_LABEL: Final = f"{PREFIX}label-schema"

GPU_COUNT_LABEL: Final = f"{PREFIX}gpu-count"
GPU_PRODUCT_LABEL: Final = f"{PREFIX}gpu-product"
GPU_VRAM_MIB_LABEL: Final = f"{PREFIX}gpu-vram-mib"
GPU_MODE_LABEL: Final = f"{PREFIX}gpu-mode"
MIG_PROFILES_LABEL: Final = f"{PREFIX}mig-profiles"
PCIE_GENERATION_LABEL: Final = f"{PREFIX}pcie-gen"
PCIE_WIDTH_LABEL: Final = f"{PREFIX}pcie-width"
PCIE_BANDWIDTH_MBPS_LABEL: Final = f"{PREFIX}pcie-bandwidth-mbps"
#: Measured host-to-device copy rates (opt-in probe), beside the theoretical figure above.
PCIE_MEASURED_PINNED_MBPS_LABEL: Final = f"{PREFIX}pcie-measured-pinned-mbps"
PCIE_MEASURED_PAGEABLE_MBPS_LABEL: Final = f"{PREFIX}pcie-measured-pageable-mbps"
#: The slowest link several of the node's GPUs sit below (a switch uplink): its effective rate,
#: which concurrent loads divide, and how many GPUs share it. Absent when no link is shared.
PCIE_SHARED_LINK_MBPS_LABEL: Final = f"{PREFIX}pcie-shared-link-mbps"
PCIE_SHARED_LINK_GPUS_LABEL: Final = f"{PREFIX}pcie-shared-link-gpus"
#: Sequential read rate of the node's model cache, measured by the agent's opt-in probe or declared.
STORAGE_READ_MBPS_LABEL: Final = f"{PREFIX}storage-read-mbps"
POWER_LIMIT_WATTS_LABEL: Final = f"{PREFIX}power-limit-watts"
POWER_DEFAULT_WATTS_LABEL: Final = f"{PREFIX}power-default-watts"
POWER_MIN_WATTS_LABEL: Final = f"{PREFIX}power-min-watts"
POWER_MAX_WATTS_LABEL: Final = f"{PREFIX}power-max-watts"
HEALTH_LABEL: Final = f"{PREFIX}health"

#: Every label the node agent owns; it removes those it no longer computes and touches no others.
NODE_AGENT_LABELS: Final = frozenset(
    {
        LABEL_SCHEMA_LABEL,
        GPU_COUNT_LABEL,
        GPU_PRODUCT_LABEL,
        GPU_VRAM_MIB_LABEL,
        GPU_MODE_LABEL,
        MIG_PROFILES_LABEL,
        PCIE_GENERATION_LABEL,
        PCIE_WIDTH_LABEL,
        PCIE_BANDWIDTH_MBPS_LABEL,
        PCIE_MEASURED_PINNED_MBPS_LABEL,
        PCIE_MEASURED_PAGEABLE_MBPS_LABEL,
        PCIE_SHARED_LINK_MBPS_LABEL,
        PCIE_SHARED_LINK_GPUS_LABEL,
        STORAGE_READ_MBPS_LABEL,
        POWER_LIMIT_WATTS_LABEL,
        POWER_DEFAULT_WATTS_LABEL,
        POWER_MIN_WATTS_LABEL,
        POWER_MAX_WATTS_LABEL,
        HEALTH_LABEL,
    }
)

# -- Node annotations --------------------------------------------------------------------------

#: Per-GPU detail as JSON (see egpu_api.gpus), written by the node agent.
GPUS_ANNOTATION: Final = f"{PREFIX}gpus"

#: Node condition the agent keeps: True while every GPU is healthy.
GPU_HEALTHY_CONDITION: Final = "GPUHealthy"

#: Power limits the operator asks for, JSON ``{"<gpu uuid>": <watts>}`` (see egpu_api.power).
POWER_REQUEST_ANNOTATION: Final = f"{PREFIX}power-limit-request"
#: Which deployment owns each GPU's power request, JSON ``{"<gpu uuid>": "<namespace>/<name>"}``.
#: Written only by the operator; the chart's admission policy refuses it to the node agent.
POWER_OWNERS_ANNOTATION: Final = f"{PREFIX}power-limit-owners"
#: What the node agent did with each request, JSON (see egpu_api.power).
POWER_STATUS_ANNOTATION: Final = f"{PREFIX}power-limit-status"
#: Which GPU(s) each pod on the node got from the device plugin, JSON
#: ``{"<namespace>/<pod>": ["GPU-<uuid>", ...]}`` (see egpu_api.assignments). Written by the node
#: agent from the kubelet's PodResources API (simulated on KWOK nodes); absent when it cannot tell.
GPU_ASSIGNMENTS_ANNOTATION: Final = f"{PREFIX}gpu-assignments"

#: Namespace-scoped Lease each node agent renews; its name is this prefix plus the node name.
AGENT_LEASE_PREFIX: Final = "egpu-node-agent-"
#: The chart labels the node agent's pods with this component (Kubernetes' recommended label);
#: the operator reads those pods, in the agent namespace only, to tell a restart from a death.
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
AGENT_COMPONENT: Final = "node-agent"
#: Set by the DaemonSet controller on each pod it makes: the revision of the pod template.
CONTROLLER_REVISION_LABEL: Final = "controller-revision-hash"

#: On each replica pod: the model's estimated load time over its node's link, in seconds.
#: The local cluster's simulated pods take this long to become Ready.
ESTIMATED_LOAD_ANNOTATION: Final = f"{PREFIX}estimated-load-seconds"
#: On each replica pod: the GPU memory it needs (model plus overhead) in MiB, so VRAM on GPUs
#: the device plugin time-slices is counted per physical GPU, not per advertised slot.
VRAM_ANNOTATION: Final = f"{PREFIX}vram-mib"

# -- Keys the operator writes on the objects it manages ----------------------------------------

#: On each replica pod and on the deployment's PodDisruptionBudget: the InferenceDeployment's name.
DEPLOYMENT_LABEL: Final = f"{PREFIX}inference-deployment"
#: On each replica pod: its replica index (0, 1, ...).
REPLICA_LABEL: Final = f"{PREFIX}replica"
#: On a node under GPU maintenance: the GPUMaintenance's name. Written only by the operator.
MAINTENANCE_LABEL: Final = f"{PREFIX}maintenance"
#: On GPUMaintenances the operator filed itself (``--auto-maintenance``): "true".
AUTO_MAINTENANCE_LABEL: Final = f"{PREFIX}auto-maintenance"
#: On an InferenceDeployment with spec.power: its power requests are released before it goes.
POWER_FINALIZER: Final = f"{PREFIX}power-limits"
#: On a GPUMaintenance that touched its node: the node is given back before it goes.
MAINTENANCE_FINALIZER: Final = f"{PREFIX}maintenance"


#: On the InferenceDeployment CRD (cluster-scoped, shared by every release): ``namespace/name`` of the
#: leader Lease of the one release that acts in the cluster; another release's operator refuses to act.
OPERATOR_LEASE_ANNOTATION: Final = f"{PREFIX}operator-lease"
#: The CRD that carries that claim.
CLAIM_CRD: Final = f"inferencedeployments.{API_GROUP}"
