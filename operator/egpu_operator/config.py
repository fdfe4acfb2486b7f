"""The operator's settings: one frozen object, built by the command line and passed in.

Nothing in the operator reads the environment: ``cli`` turns flags (whose defaults come from
the documented ``EGPU_*`` environment variables) into an ``OperatorConfig``, and every part
that needs a setting receives it. So a test builds the operator with the settings it wants,
and a setting cannot change under a running operator.
"""

from dataclasses import dataclass, field

from egpu_api import keys
from egpu_operator.leader import LeaderConfig
from egpu_operator.liveness import LivenessConfig


@dataclass(frozen=True)
class OperatorConfig:
    """Defaults as documented in README.md; ``cli`` names the flag and variable of each."""

    #: Reconcile workers draining the InferenceDeployment work queue.
    workers: int = 4
    #: Every deployment is queued again this often: it notices agents whose Lease went stale.
    resync_s: float = 30.0
    #: An open GPUMaintenance is looked at again this often: it waits on pods becoming Ready and on
    #: budgets, which are not its own events. There are a handful at a time, never one per node.
    maintenance_poll_s: float = 2.0
    #: GPUMaintenances draining at once, cluster-wide.
    max_parallel_maintenances: int = 1
    #: File a GPUMaintenance when an agent reports a lost GPU or a degraded link.
    auto_maintenance: bool = False
    #: Only agent Leases in this namespace count: a tenant allowed to write Leases in its own
    #: namespace could otherwise keep a dead node looking alive by forging one there.
    agent_namespace: str = "egpu-system"
    #: Names time-sliced or MPS GPUs may be advertised under, besides nvidia.com/gpu: the device
    #: plugin's renameByDefault gives nvidia.com/gpu.shared, its ``rename`` any other name.
    shared_gpu_resources: tuple[str, ...] = keys.SHARED_GPU_RESOURCES
    #: DRA drivers whose devices are GPUs placement counts and drains wait for; empty: the operator
    #: does not watch resource.k8s.io at all (a cluster before Kubernetes 1.34 has no v1 of it).
    dra_drivers: tuple[str, ...] = (keys.DRA_GPU_DRIVER,)
    #: The DeviceClass a replica's ResourceClaim asks for (the driver's chart installs it).
    dra_device_class: str = keys.DRA_GPU_DEVICE_CLASS
    #: How agents are judged alive, unknown or dead (``liveness``).
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    #: Where the leader Lease is and its timing (``leader``): only the replica holding it writes.
    leader: LeaderConfig = field(default_factory=LeaderConfig)
    #: Port of /metrics, /healthz and /readyz; 0 serves none of them.
    metrics_port: int = 8080

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.max_parallel_maintenances < 1:
            raise ValueError("max parallel maintenances must be at least 1")
        if self.resync_s <= 0 or self.maintenance_poll_s <= 0:
            raise ValueError("the resync and maintenance poll intervals must be positive numbers of seconds")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError("the metrics port must be between 0 and 65535")
        if self.dra_drivers and not self.dra_device_class:
            raise ValueError("a DRA device class must be named when DRA drivers are")
        if not self.agent_namespace:
            raise ValueError("the agent namespace must not be empty")
