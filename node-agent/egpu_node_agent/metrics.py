"""Prometheus metrics of the node agent; every series carries the node, so one simulator process can serve many.

GPU series carry dcgm-exporter's own label names and spellings (``gpu``, ``UUID``,
``pci_bus_id`` as NVML writes it, ``modelName``, ``Hostname``), so a query can join them with
``DCGM_FI_*`` series ``on (UUID)`` or ``on (Hostname, gpu)`` without ``label_replace``. No
``_created`` series: they double the series count and no dashboard reads them.
"""

import contextlib
from collections.abc import Mapping, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from egpu_api.gpus import HopStatus, LinkStatus
from egpu_api.power import EXTERNALLY_MANAGED, PowerLimitStatus
from egpu_node_agent.readings import CLOCK_EVENT_REASONS, GpuReading

#: Labels of every per-GPU series: ours first, then dcgm-exporter's (its spellings, its order).
GPU_LABELS = ("node", "gpu", "UUID", "pci_bus_id", "modelName", "Hostname")
HEALTH_STATES = ("ok", "degraded", "lost")


def nvml_bus_id(bus_id: str) -> str:
    """A PCI address as NVML and dcgm-exporter write it (``00000000:3B:00.0``), from sysfs's ``0000:3b:00.0``."""
    domain, _, rest = bus_id.partition(":")
    if not rest:
        return bus_id.upper()
    return f"{int(domain, 16):08X}:{rest.upper()}"


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, version: str = "unknown") -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        PlatformCollector(registry=self.registry)  # python_info
        Info("egpu_node_agent_build", "Version of the node agent", registry=self.registry).info({"version": version})
        gpu = GPU_LABELS
        self.power_usage = Gauge("egpu_gpu_power_usage_watts", "Power draw", gpu, registry=self.registry)
        self.power_limit = Gauge("egpu_gpu_power_limit_watts", "Power limit NVML enforces", gpu, registry=self.registry)
        self.power_target = Gauge(
            "egpu_gpu_power_limit_target_watts",
            "Power limit the operator requested, clamped to what the GPU allows; only GPUs with a request",
            gpu,
            registry=self.registry,
        )
        self.power_applied = Gauge(
            "egpu_gpu_power_limit_applied",
            "1 when NVML enforces the requested (clamped) limit, 0 when it does not (error, read-only agent); "
            "only GPUs with a request",
            gpu,
            registry=self.registry,
        )
        self.power_external = Gauge(
            "egpu_gpu_power_limit_external",
            "1 when someone else (a DCGM policy, nvidia-smi -pl) set the limit of a requested GPU and the agent "
            "leaves it alone (power-limit-status state ExternallyManaged), else 0; only GPUs with a request",
            gpu,
            registry=self.registry,
        )
        self._power_series: set[tuple[str, ...]] = set()
        self._gfd_series: set[tuple[str, str]] = set()
        self.temperature = Gauge("egpu_gpu_temperature_celsius", "GPU temperature", gpu, registry=self.registry)
        self.pcie_tx = Gauge("egpu_gpu_pcie_tx_bytes_per_second", "PCIe transmit throughput", gpu, registry=self.registry)
        self.pcie_rx = Gauge("egpu_gpu_pcie_rx_bytes_per_second", "PCIe receive throughput", gpu, registry=self.registry)
        self.link_generation = Gauge(
            "egpu_gpu_pcie_link_generation",
            "PCIe generation of the GPU's own link, as trained now",
            gpu,
            registry=self.registry,
        )
        self.link_width = Gauge("egpu_gpu_pcie_link_width", "PCIe lanes of the GPU's own link", gpu, registry=self.registry)
        self.link_capable_generation = Gauge(
            "egpu_gpu_pcie_link_capable_generation",
            "PCIe generation the GPU's own link can train at (NVML's max link generation, system-limited)",
            gpu,
            registry=self.registry,
        )
        self.link_capable_width = Gauge(
            "egpu_gpu_pcie_link_capable_width",
            "PCIe lanes the GPU's own link can train at (NVML's max link width)",
            gpu,
            registry=self.registry,
        )
        self.bottleneck_generation = Gauge(
            "egpu_gpu_pcie_bottleneck_generation",
            "PCIe generation of the slowest hop between host memory and the GPU (what a model load crosses)",
            gpu,
            registry=self.registry,
        )
        self.bottleneck_width = Gauge(
            "egpu_gpu_pcie_bottleneck_width", "PCIe lanes of the slowest hop to the GPU", gpu, registry=self.registry
        )
        self.effective_bandwidth = Gauge(
            "egpu_gpu_pcie_effective_bandwidth_mbps",
            "Effective host-to-GPU bandwidth of the bottleneck hop in MB/s: the figure placement divides model.size by",
            gpu,
            registry=self.registry,
        )
        self.shared_link_gpus = Gauge(
            "egpu_gpu_pcie_shared_link_gpus",
            "GPUs of the node below the slowest shared link on this GPU's path (a switch uplink), labelled by the "
            "link's downstream device; GPUs with the same link are one group. Absent when no link is shared",
            (*gpu, "link"),
            registry=self.registry,
        )
        self.shared_link_bandwidth = Gauge(
            "egpu_gpu_pcie_shared_link_bandwidth_mbps",
            "Effective MB/s of that shared link with it to one load; concurrent loads of its group divide it",
            (*gpu, "link"),
            registry=self.registry,
        )
        self.replays = Gauge(
            "egpu_gpu_pcie_replay_count",
            "PCIe replays since the driver loaded (NVML's replay counter; take increase() of it)",
            gpu,
            registry=self.registry,
        )
        self.clock_events = Gauge(
            "egpu_gpu_clock_event_reason",
            "1 while NVML reports this clock-event (throttle) reason, else 0; reasons as nvidia-smi names them",
            (*gpu, "reason"),
            registry=self.registry,
        )
        self.healthy = Gauge("egpu_gpu_healthy", "1 if the GPU is healthy, 0 if degraded or lost", gpu, registry=self.registry)
        self.health = Gauge(
            "egpu_gpu_health",
            "1 for the GPU's health state (ok, degraded: e.g. a downtrained link, lost: off the bus), 0 for the others",
            (*gpu, "state"),
            registry=self.registry,
        )
        self.publishes = Counter(
            "egpu_node_agent_label_publishes",
            "Patches of node labels and annotations",
            ["node"],
            registry=self.registry,
        )
        self.gfd_disagreement = Gauge(
            "egpu_node_agent_gfd_label_disagreement",
            "1 when GPU Feature Discovery's node label (nvidia.com/gpu.product, .memory, .count) disagrees with NVML, "
            "0 when it agrees; only labels GFD has set",
            ["node", "label"],
            registry=self.registry,
        )
        self.errors = Counter("egpu_node_agent_errors", "Errors by kind", ["node", "kind"], registry=self.registry)
        self.poll_seconds = Histogram(
            "egpu_node_agent_poll_seconds",
            "Time to read every GPU and publish",
            ["node"],
            buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )

    def observe_gfd(self, node: str, present: Sequence[str], disagreeing: Sequence[str]) -> None:
        """One series per GFD label present on ``node``; labels GFD removed lose theirs."""
        for label in present:
            self.gfd_disagreement.labels(node, label).set(1 if label in disagreeing else 0)
        for labels in list(self._gfd_series):
            if labels[0] == node and labels[1] not in present:
                with contextlib.suppress(KeyError):
                    self.gfd_disagreement.remove(*labels)
        self._gfd_series = {labels for labels in self._gfd_series if labels[0] != node} | {(node, label) for label in present}

    def observe(
        self,
        node: str,
        readings: list[GpuReading],
        health: dict[str, str],
        telemetry: bool = True,
        power: Mapping[str, PowerLimitStatus] | None = None,
        links: Mapping[str, LinkStatus] | None = None,
        paths: Mapping[str, Sequence[HopStatus]] | None = None,
    ) -> None:
        """Set every series of ``node`` from one poll; ``power`` is the power-limit status the agent
        reports (GPUs without a request have none, and lose their power-request series), ``links``
        the bottleneck hop per GPU as the agent publishes it, ``paths`` each GPU's links (for sharing)."""
        requested: set[tuple[str, ...]] = set()
        for reading in readings:
            labels = (node, str(reading.index), reading.uuid, nvml_bus_id(reading.pci_bus_id), reading.product, node)
            wanted = (power or {}).get(reading.uuid)
            if wanted is not None and wanted.requested_watts is not None:
                requested.add(labels)
                if wanted.target_watts is not None:
                    self.power_target.labels(*labels).set(wanted.target_watts)
                applied = wanted.error is None and not wanted.dry_run and wanted.applied_watts == wanted.target_watts
                self.power_applied.labels(*labels).set(1 if applied else 0)
                self.power_external.labels(*labels).set(1 if wanted.state == EXTERNALLY_MANAGED else 0)
            state = health.get(reading.uuid, "lost")
            self.healthy.labels(*labels).set(1 if state == "ok" else 0)
            for each in HEALTH_STATES:
                self.health.labels(*labels, each).set(1 if state == each else 0)
            if reading.power is not None:
                self.power_limit.labels(*labels).set(reading.power.limit_watts)
            if reading.link_current is not None:
                self.link_generation.labels(*labels).set(reading.link_current.generation)
                self.link_width.labels(*labels).set(reading.link_current.width)
            if reading.link_max is not None:
                self.link_capable_generation.labels(*labels).set(reading.link_max.generation)
                self.link_capable_width.labels(*labels).set(reading.link_max.width)
            link = (links or {}).get(reading.uuid)
            if link is not None:
                self.bottleneck_generation.labels(*labels).set(link.generation)
                self.bottleneck_width.labels(*labels).set(link.width)
                self.effective_bandwidth.labels(*labels).set(link.effective_mbps)
            shared = [hop for hop in (paths or {}).get(reading.uuid, ()) if hop.shared_by > 1 and hop.effective_mbps]
            if shared:
                slowest = min(shared, key=lambda hop: hop.effective_mbps or 0)
                self.shared_link_gpus.labels(*labels, slowest.device).set(slowest.shared_by)
                self.shared_link_bandwidth.labels(*labels, slowest.device).set(slowest.effective_mbps or 0)
            if reading.pcie_replay_count is not None:
                self.replays.labels(*labels).set(reading.pcie_replay_count)
            if reading.clock_event_reasons is not None:
                for bit, reason in CLOCK_EVENT_REASONS.items():
                    self.clock_events.labels(*labels, reason).set(1 if reading.clock_event_reasons & bit else 0)
            if not telemetry:
                continue  # keep the last volatile values rather than blanking them
            if reading.power is not None and reading.power.usage_watts is not None:
                self.power_usage.labels(*labels).set(reading.power.usage_watts)
            if reading.temperature_c is not None:
                self.temperature.labels(*labels).set(reading.temperature_c)
            if reading.pcie_tx_kbps is not None:
                self.pcie_tx.labels(*labels).set(reading.pcie_tx_kbps * 1000)
            if reading.pcie_rx_kbps is not None:
                self.pcie_rx.labels(*labels).set(reading.pcie_rx_kbps * 1000)
        for gone in {labels for labels in self._power_series if labels[0] == node} - requested:
            for gauge in (self.power_target, self.power_applied, self.power_external):
                with contextlib.suppress(KeyError):
                    gauge.remove(*gone)
        self._power_series = {labels for labels in self._power_series if labels[0] != node} | requested
