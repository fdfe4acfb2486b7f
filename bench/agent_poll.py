"""Benchmark: what one node-agent poll costs, and how many patches a steady fleet sends.

    python bench/agent_poll.py                 # 8 fake GPUs (+ the real ones with --nvml)
    python bench/agent_poll.py --steady-state  # also: patches/min of the simulated fleet on a local cluster

Baselines are the targets from issue #3: one poll of 8 GPUs under 20 ms of CPU, agent RSS
under 60 MiB, zero patches per minute at steady state. Each figure is printed with its ratio
to the target (below 1.0 is within target).
"""

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from egpu_api.fleet import FleetProfile, load_fleet, parse_fleet
from egpu_api.gpus import dump_gpus
from egpu_node_agent.fake_nvml import FakeGpuHost
from egpu_node_agent.labels import gpu_status, node_labels
from egpu_node_agent.nvml import NvmlBackend, load_pynvml

TARGET_POLL_MS_8_GPUS = 20.0
TARGET_RSS_MIB = 60.0
TARGET_PATCHES_PER_MIN = 0.0


def eight_gpu_fleet() -> FleetProfile:
    """The switch host's A5000 eight times over: one node with 8 GPUs behind a switch."""
    document: dict[str, Any] = load_fleet().model_dump(by_alias=True, exclude_none=True)
    switch = next(node for node in document["nodes"] if node["name"] == "switch-4x-a5000")
    gpu = switch["gpus"][0]
    gpus = [{**gpu, "pciBusId": f"0000:{index + 3:02x}:00.0"} for index in range(8)]
    return parse_fleet({**document, "nodes": [{**switch, "name": "switch-8x-a5000", "gpus": gpus}]})


def time_polls(backend: NvmlBackend, polls: int, telemetry: bool = False) -> list[float]:
    """CPU milliseconds per poll: read every GPU, compute labels and the annotation.

    Without ``telemetry`` this is the agent's every-poll path; with it, the poll it makes every
    30 s for metrics (PCIe throughput, temperature, power draw).
    """
    samples = []
    for _ in range(polls):
        started = time.process_time()
        gpus = [gpu_status(reading) for reading in backend.read(telemetry)]
        node_labels(gpus)
        dump_gpus(gpus)
        samples.append((time.process_time() - started) * 1000)
    return samples


class TimedLibrary:
    """Wraps an NVML-shaped library and adds up the CPU and wall time each function costs."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib
        self.NVMLError = lib.NVMLError
        self.cpu_ms: dict[str, float] = {}
        self.wall_ms: dict[str, float] = {}

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._lib, name)
        if not callable(call):
            return call

        def timed(*args: Any) -> Any:
            cpu, wall = time.process_time(), time.perf_counter()
            try:
                return call(*args)
            finally:
                self.cpu_ms[name] = self.cpu_ms.get(name, 0) + (time.process_time() - cpu) * 1000
                self.wall_ms[name] = self.wall_ms.get(name, 0) + (time.perf_counter() - wall) * 1000

        return timed


def report(name: str, gpus: int, samples: list[float]) -> None:
    mean = statistics.mean(samples)
    p95 = statistics.quantiles(samples, n=20)[-1]
    target = TARGET_POLL_MS_8_GPUS * gpus / 8
    print(f"{name:<28} gpus={gpus}  cpu/poll mean={mean:6.2f} ms  p95={p95:6.2f} ms  "
          f"target={target:.1f} ms  ratio={mean / target:.3f}")  # fmt: skip


def agent_like_rss() -> float:
    """VmRSS of a fresh process that loads what the agent loads on a real GPU node, in MiB."""
    script = (
        "import egpu_node_agent.agent, egpu_node_agent.publisher, egpu_node_agent.metrics, prometheus_client, pathlib\n"
        "from egpu_node_agent.nvml import NvmlBackend, load_pynvml\n"
        "from egpu_node_agent.labels import gpu_status, node_labels\n"
        "b = NvmlBackend(load_pynvml()); node_labels([gpu_status(r) for r in b.read()])\n"
        "print(next(l for l in pathlib.Path('/proc/self/status').read_text().splitlines() if l.startswith('VmRSS')))\n"
    )
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return int(output.split()[1]) / 1024


def agent_process_rss(kubeconfig: Path) -> float:
    """VmRSS of a real ``egpu-node-agent run`` process (fake backend) after a few polls, in MiB."""
    command = [sys.executable, "-m", "egpu_node_agent", "run", "--backend", "fake", "--node-name", "pi5-rtx4090",
               "--kubeconfig", str(kubeconfig), "--poll-interval", "1", "--metrics-port", "0"]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    try:
        time.sleep(6)
        status = Path(f"/proc/{process.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024
    finally:
        process.terminate()
        process.wait(timeout=10)


def steady_state_patches(seconds: float) -> None:
    from egpu_localcluster import LocalCluster, ensure_tools
    from egpu_node_agent.simulator import FleetSimulator
    from egpu_runtime.kube import api_client

    fleet = load_fleet()
    with LocalCluster(ensure_tools()) as cluster, tempfile.TemporaryDirectory() as sysfs:
        cluster.kubectl.apply_fleet(fleet)
        cluster.kubectl.wait_nodes_ready(node.name for node in fleet.nodes)
        cluster.kubectl.run("create", "namespace", "egpu-system")
        agent_rss_mib = agent_process_rss(cluster.kubeconfig)
        simulator = FleetSimulator(fleet, api_client(cluster.kubeconfig), "egpu-system", Path(sysfs), poll_interval_s=1.0)
        simulator.start()
        time.sleep(5)  # converge: first publish, condition, lease
        before = sum(agent.publisher.patches for agent in simulator.agents.values())
        time.sleep(seconds)
        after = sum(agent.publisher.patches for agent in simulator.agents.values())
        simulator.stop()
    print(f"{'agent process RSS (run)':<28} {agent_rss_mib:.1f} MiB  target={TARGET_RSS_MIB:.0f} MiB  "
          f"ratio={agent_rss_mib / TARGET_RSS_MIB:.3f}")  # fmt: skip
    per_minute = (after - before) * 60 / seconds
    print(f"steady state ({len(fleet.nodes)} agents, 1 s polls, {seconds:.0f} s)  "
          f"patches/min={per_minute:.1f}  target={TARGET_PATCHES_PER_MIN:.0f}  "
          f"{'within target' if per_minute <= TARGET_PATCHES_PER_MIN else 'ABOVE TARGET'}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=200)
    parser.add_argument("--nvml", action="store_true", help="also time the real NVML backend")
    parser.add_argument("--steady-state", action="store_true", help="run the simulated fleet on a local cluster")
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as sysfs:
        host = FakeGpuHost(eight_gpu_fleet().nodes[0], Path(sysfs))
        backend = NvmlBackend(host.nvml, host.sysfs_root)
        time_polls(backend, 5)  # warm-up
        report("fake NVML + fake sysfs", 8, time_polls(backend, args.polls))
        report("  ... with telemetry", 8, time_polls(backend, args.polls, telemetry=True))
    if args.nvml:
        real = NvmlBackend(load_pynvml())
        count = len(real.read())
        report("real NVML + /sys", count, time_polls(real, args.polls))
        report("  ... with telemetry", count, time_polls(real, args.polls // 4, telemetry=True))
        real.close()
        timed = TimedLibrary(load_pynvml())
        profiled = NvmlBackend(timed)
        time_polls(profiled, 20, telemetry=True)
        print("NVML calls, per poll (20 polls with telemetry), most expensive first:")
        for call, cpu in sorted(timed.cpu_ms.items(), key=lambda item: -item[1])[:8]:
            print(f"  {call:<45} cpu={cpu / 20:6.3f} ms  wall={timed.wall_ms[call] / 20:6.3f} ms")
        profiled.close()
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'bench process max RSS':<28} {rss_mib:.1f} MiB (8 fake GPUs, no API client)")
    if args.nvml:
        print(f"{'agent-like process RSS':<28} {agent_like_rss():.1f} MiB  target={TARGET_RSS_MIB:.0f} MiB  "
              f"(real NVML loaded, API client and metrics imported, no connection)")  # fmt: skip
    if args.steady_state:
        steady_state_patches(args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
