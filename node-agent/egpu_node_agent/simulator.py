"""Run one node agent per node of a fleet profile, each on its own fake NVML and sysfs.

This is how KWOK clusters and ``make demo`` get real labels: the agents are the real agent
code; only the hardware underneath is simulated. Faults are injected through ``hosts``.
"""

import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from egpu_api.fleet import FleetProfile
from egpu_node_agent.agent import AgentConfig, NodeAgent
from egpu_node_agent.fake_nvml import FakeGpuHost
from egpu_node_agent.metrics import AgentMetrics
from egpu_node_agent.nvml import NvmlBackend
from egpu_node_agent.publisher import NodePublisher

log = logging.getLogger("egpu_node_agent.simulator")


class FleetSimulator:
    def __init__(
        self,
        fleet: FleetProfile,
        api_client: Any,
        namespace: str,
        sysfs_dir: Path,
        poll_interval_s: float = 10.0,
        read_only: bool = False,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.metrics = metrics or AgentMetrics()
        self.hosts: dict[str, FakeGpuHost] = {}
        self.agents: dict[str, NodeAgent] = {}
        self._stops: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}
        for node in fleet.nodes:
            host = FakeGpuHost(node, sysfs_dir / node.name)
            publisher = NodePublisher(api_client, node.name, namespace)
            config = AgentConfig(
                node.name, poll_interval_s=poll_interval_s, read_only=read_only, storage_read_mbps=node.host.storage_read_mbps
            )
            self.hosts[node.name] = host
            self.agents[node.name] = NodeAgent(config, NvmlBackend(host.nvml, host.sysfs_root), publisher, self.metrics)

    def start(self) -> None:
        self.start_agents(self.agents)
        log.info("fleet simulator started", extra={"nodes": len(self.agents)})

    def start_agents(self, names: Iterable[str]) -> None:
        """Start (or start again) these nodes' agents."""
        for name in names:
            if name in self._threads:
                continue
            stop = self._stops[name] = threading.Event()
            thread = self._threads[name] = threading.Thread(
                target=self.agents[name].run, args=(stop,), name=f"agent-{name}", daemon=True
            )
            thread.start()

    def stop_agents(self, names: Iterable[str]) -> None:
        """Stop these nodes' agents as a crash would leave them: no goodbye, the Lease just ages."""
        names = [name for name in names if name in self._threads]
        for name in names:
            self._stops[name].set()
            self.agents[name].publisher.changed.set()  # wake the loop
        for name in names:
            self._threads.pop(name).join(timeout=10)

    def stop(self) -> None:
        self.stop_agents(list(self._threads))
        for agent in self.agents.values():
            agent.publisher.close()
            agent.backend.close()
