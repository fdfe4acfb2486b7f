"""Prometheus metrics of the node agent; every series carries the node, so one simulator process can serve many."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from egpu_node_agent.readings import GpuReading


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        gpu = ["node", "gpu", "uuid"]
        self.power_usage = Gauge("egpu_gpu_power_usage_watts", "Power draw", gpu, registry=self.registry)
        self.power_limit = Gauge("egpu_gpu_power_limit_watts", "Power limit NVML enforces", gpu, registry=self.registry)
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
        self.healthy = Gauge("egpu_gpu_healthy", "1 if the GPU is healthy, 0 if degraded or lost", gpu, registry=self.registry)
        self.publishes = Counter(
            "egpu_node_agent_label_publishes",
            "Patches of node labels and annotations",
            ["node"],
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

    def observe(self, node: str, readings: list[GpuReading], health: dict[str, str], telemetry: bool = True) -> None:
        for reading in readings:
            labels = (node, str(reading.index), reading.uuid)
            self.healthy.labels(*labels).set(1 if health.get(reading.uuid) == "ok" else 0)
            if reading.power is not None:
                self.power_limit.labels(*labels).set(reading.power.limit_watts)
            if reading.link_current is not None:
                self.link_generation.labels(*labels).set(reading.link_current.generation)
                self.link_width.labels(*labels).set(reading.link_current.width)
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
