"""Run one node agent per node of a fleet profile, each on its own fake NVML and sysfs.

This is how KWOK clusters and ``make demo`` get real labels: the agents are the real agent
code; only the hardware underneath is simulated. Faults are injected through ``hosts``.
A KWOK node has no kubelet to say which GPU a pod got, so each agent's assignments come from a
``SimulatedAssigner`` over the pods bound to its node, listed once for the whole fleet.
"""

import functools
import json
import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kubernetes import client

from egpu_api.fleet import FleetProfile
from egpu_node_agent.agent import AgentConfig, NodeAgent
from egpu_node_agent.assignments import SimulatedAssigner, simulated_devices
from egpu_node_agent.fake_nvml import FakeGpuHost
from egpu_node_agent.metrics import AgentMetrics
from egpu_node_agent.nvml import NvmlBackend
from egpu_node_agent.publisher import NodePublisher

log = logging.getLogger("egpu_node_agent.simulator")


class ClusterPods:
    """The pods bound to nodes, listed at most once per ``max_age_s`` however many agents ask."""

    def __init__(self, api_client: Any, max_age_s: float) -> None:
        self._core: Any = client.CoreV1Api(api_client)
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._listed_at = -float("inf")
        self._by_node: dict[str, list[dict[str, Any]]] = {}

    def on(self, node: str) -> list[dict[str, Any]]:
        """The pods bound to ``node``; raises when the API server cannot be asked."""
        with self._lock:
            if time.monotonic() - self._listed_at >= self.max_age_s:
                response = self._core.list_pod_for_all_namespaces(field_selector="spec.nodeName!=", _preload_content=False)
                by_node: dict[str, list[dict[str, Any]]] = {}
                for pod in json.loads(response.data)["items"]:
                    by_node.setdefault(pod["spec"]["nodeName"], []).append(pod)
                self._by_node, self._listed_at = by_node, time.monotonic()
            return self._by_node.get(node, [])


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
        self.pods = ClusterPods(api_client, max_age_s=poll_interval_s)
        for node in fleet.nodes:
            host = FakeGpuHost(node, sysfs_dir / node.name)
            publisher = NodePublisher(api_client, node.name, namespace)
            config = AgentConfig(
                node.name, poll_interval_s=poll_interval_s, read_only=read_only, storage_read_mbps=node.host.storage_read_mbps
            )
            self.hosts[node.name] = host
            assigner = SimulatedAssigner(simulated_devices(node), functools.partial(self.pods.on, node.name))
            self.agents[node.name] = NodeAgent(
                config, NvmlBackend(host.nvml, host.sysfs_root), publisher, self.metrics, assignments=assigner
            )

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
