"""``egpu-node-agent``: the node agent (DaemonSet) and the fleet simulator (KWOK clusters, demo).

  egpu-node-agent run --node-name $NODE_NAME            # on a GPU node, NVML backend
  egpu-node-agent run --backend none                    # documented no-GPU mode
  egpu-node-agent simulate --fleet fleet.yaml --kubeconfig k.yaml
  egpu-node-agent labels [--backend fake --fleet F --node-name N]   # print labels, touch nothing
  egpu-node-agent restore-power --node-name N           # put back the default limits the agent set

Any failure a user can cause (no NVML, a bad profile, an unknown node, a bad log level, no API
access) is one line on stderr and a non-zero exit, never a traceback. Output piped into a reader
that stops early (``| head``) ends quietly.
"""

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from egpu_api.fleet import DEFAULT_FLEET, FleetProfileError, load_fleet
from egpu_api.gpus import dump_gpus
from egpu_node_agent.fake_nvml import FakeGpuHost
from egpu_node_agent.labels import gpu_statuses, node_labels
from egpu_node_agent.nogpu import NoGpuBackend
from egpu_node_agent.nvml import BackendUnavailable, GpuBackend, NvmlBackend, load_pynvml
from egpu_node_agent.release import RESTORE_MODES
from egpu_runtime import logs

if TYPE_CHECKING:
    from egpu_node_agent.agent import NodeAgent
    from egpu_node_agent.podresources import PodResourcesSource
    from egpu_node_agent.publisher import NodePublisher

EXIT_USAGE, EXIT_NO_NVML, EXIT_API = 2, 3, 4
# What a shell reports for a process killed by SIGPIPE (128 + 13): the reader of our output left.
EXIT_BROKEN_PIPE = 141
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = args.log_level or os.environ.get("EGPU_LOG_LEVEL") or "info"
    if level.lower() not in LOG_LEVELS:
        source = "--log-level" if args.log_level else "EGPU_LOG_LEVEL"
        print(f"egpu-node-agent: {source} {level!r} is not a log level; use one of {', '.join(LOG_LEVELS)}", file=sys.stderr)
        return EXIT_USAGE
    logs.configure(level)
    try:
        if args.command == "labels":
            return _print_labels(args)
        if args.command == "check":
            return _check(args)
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "restore-power":
            return _restore_power(args)
        return _run(args)
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except BackendUnavailable as error:
        print(f"egpu-node-agent: {error}", file=sys.stderr)
        return EXIT_NO_NVML
    except FleetProfileError as error:
        for problem in str(error).splitlines():  # one line per problem
            print(f"egpu-node-agent: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:
        print(f"egpu-node-agent: {type(error).__name__}: {_first_line(error)}", file=sys.stderr)
        return EXIT_API


def version() -> str:
    """The installed distribution's version (one version for the package, images and chart)."""
    try:
        return metadata.version("egpu-operator")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="egpu-node-agent", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument(
        "--log-level",
        help=f"one of {', '.join(LOG_LEVELS)} (default: $EGPU_LOG_LEVEL or info); logs are JSON lines on stderr",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def backend_options(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--backend",
            choices=("nvml", "fake", "none"),
            default="nvml",
            help="nvml: the real GPUs (default); fake: simulated GPUs from --fleet; none: a node without GPUs",
        )
        command.add_argument("--fleet", type=Path, default=DEFAULT_FLEET, help="fleet profile (fake backend)")
        command.add_argument(
            "--sysfs-root", type=Path, default=Path("/sys"), help="where sysfs is mounted, for the PCIe path (default: /sys)"
        )

    def fleet_node_option(command: argparse.ArgumentParser) -> None:
        # --node-name as `run` spells it; --node kept for scripts written before.
        command.add_argument("--node-name", "--node", dest="node", metavar="NAME", help="fleet node to simulate (fake backend)")

    run = commands.add_parser("run", help="run the agent for one node")
    backend_options(run)
    run.add_argument("--node-name", default=os.environ.get("NODE_NAME"), help="default: $NODE_NAME (downward API)")
    run.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "egpu-system"), help="for the Lease")
    run.add_argument("--kubeconfig", type=Path, default=None, help="default: in-cluster credentials")
    run.add_argument("--poll-interval", type=float, default=10.0, help="seconds between polls (default 10)")
    run.add_argument("--read-only", action="store_true", help="never change a GPU; report power requests as dry runs")
    run.add_argument(
        "--restore-power-on-exit",
        choices=RESTORE_MODES,
        default="never",
        help="on SIGTERM, put back the default limits the agent set: never (default); uninstall: when its DaemonSet "
        "(--daemonset-name) is gone, being deleted or now read-only; always",
    )
    run.add_argument(
        "--daemonset-name",
        default=os.environ.get("DAEMONSET_NAME"),
        help="the agent's DaemonSet in --namespace, read at exit by --restore-power-on-exit=uninstall (default: $DAEMONSET_NAME)",
    )
    run.add_argument("--metrics-port", type=int, default=9400, help="Prometheus /metrics port; 0 disables")
    run.add_argument(
        "--probe-bandwidth",
        action="store_true",
        help="measure host-to-device copy bandwidth once at start (needs libcudart) and publish it",
    )
    run.add_argument(
        "--storage-read-mbps",
        type=_positive_mbps,
        default=None,
        metavar="MBPS",
        help="declare the model cache's sequential read rate in MB/s (10^6 bytes/s), published as "
        "egpu-operator.io/storage-read-mbps; the fake backend defaults to the profile's storageReadMBps",
    )
    run.add_argument(
        "--probe-storage",
        type=Path,
        default=None,
        metavar="MODEL_CACHE",
        help="measure the model cache's sequential read rate once at start (O_DIRECT, at most 4 GiB or 10 s, "
        "read-only) and publish it; overrides --storage-read-mbps when it succeeds",
    )
    run.add_argument(
        "--pod-resources-socket",
        default=None,
        metavar="PATH",
        help="the kubelet's PodResources socket, asked which GPU each pod got (published as "
        "egpu-operator.io/gpu-assignments); default: /var/lib/kubelet/pod-resources/kubelet.sock with the nvml "
        "backend, none with fake GPUs (no kubelet knows them); '' turns it off",
    )

    labels = commands.add_parser("labels", help="print the labels and per-GPU status this node would get")
    backend_options(labels)
    fleet_node_option(labels)

    check = commands.add_parser("check", help="compare what the agent reads with nvidia-smi -q (read-only)")
    backend_options(check)
    fleet_node_option(check)
    check.add_argument("--probe", action="store_true", help="also measure host-to-device copy bandwidth (needs libcudart)")

    restore = commands.add_parser(
        "restore-power",
        help="put back the default limit of every GPU whose limit the agent set (from the node's power-limit-status), "
        "leave the others, and say so in a log line, an Event and the annotation; stop the agent first, or it "
        "applies its requests again",
    )
    backend_options(restore)
    restore.add_argument("--node-name", default=os.environ.get("NODE_NAME"), help="default: $NODE_NAME (downward API)")
    restore.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "egpu-system"), help=argparse.SUPPRESS)
    restore.add_argument("--kubeconfig", type=Path, default=None, help="default: in-cluster credentials")

    simulate = commands.add_parser("simulate", help="run one agent per node of a fleet profile on fake GPUs")
    simulate.add_argument("--fleet", type=Path, default=DEFAULT_FLEET, help="fleet profile whose nodes to simulate")
    simulate.add_argument("--kubeconfig", type=Path, required=True, help="kubeconfig of the cluster holding the nodes")
    simulate.add_argument("--namespace", default="egpu-system", help="for the agents' Leases (default: egpu-system)")
    simulate.add_argument("--poll-interval", type=float, default=10.0, help="seconds between polls (default 10)")
    simulate.add_argument("--read-only", action="store_true", help="never change a simulated GPU; power requests become dry runs")
    simulate.add_argument("--metrics-port", type=int, default=0, help="Prometheus /metrics port; 0 (default) disables")
    return parser


def _backend(args: argparse.Namespace, node_name: str | None, cleanup: contextlib.ExitStack) -> GpuBackend:
    """The GPU backend ``args`` ask for; a fake one's sysfs tree lives until ``cleanup`` closes."""
    if args.backend == "none":
        return NoGpuBackend()
    if args.backend == "fake":
        fleet = load_fleet(args.fleet)
        if node_name is None:
            raise FleetProfileError("the fake backend needs a node: pass --node-name")
        names = [node.name for node in fleet.nodes]
        if node_name not in names:
            raise FleetProfileError(
                f"fleet profile {args.fleet}: no node {node_name!r}; the nodes of fleet {fleet.metadata.name!r} are "
                + ", ".join(names)
            )
        sysfs = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="egpu-sysfs-")))
        host = FakeGpuHost(fleet.node(node_name), sysfs)
        return NvmlBackend(host.nvml, host.sysfs_root)
    return NvmlBackend(load_pynvml(), args.sysfs_root)


def _positive_mbps(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate; give whole MB/s above 0, e.g. 90 for an SD card")
    return value


def _storage_rate(args: argparse.Namespace) -> int | None:
    """The model cache's read rate: probed if asked (and it works), else declared; for the fake backend,
    the fleet profile's when none is given."""
    if args.probe_storage is not None:
        from egpu_node_agent import storage_probe

        log = logging.getLogger("egpu_node_agent")
        try:
            reading = storage_probe.probe_storage(args.probe_storage)
        except storage_probe.StorageProbeError as error:
            log.warning("storage probe skipped", extra={"reason": str(error)})
        else:
            log.info("storage probed", extra={"path": reading.path, "mbps": reading.read_mbps, "method": reading.method,
                                              "bytes": reading.bytes_read})  # fmt: skip
            return reading.read_mbps
    if args.storage_read_mbps is not None or args.backend != "fake":
        return int(args.storage_read_mbps) if args.storage_read_mbps is not None else None
    return load_fleet(args.fleet).node(args.node_name).host.storage_read_mbps


def _assignment_source(args: argparse.Namespace) -> "PodResourcesSource | None":
    """The kubelet's PodResources on a real node; nothing where it is turned off or the GPUs are fake."""
    from egpu_node_agent.podresources import DEFAULT_SOCKET, PodResourcesClient, PodResourcesSource

    path = args.pod_resources_socket
    if path is None:
        path = DEFAULT_SOCKET if args.backend == "nvml" else ""
    return PodResourcesSource(PodResourcesClient(path)) if path else None


def _print_labels(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as cleanup:
        backend = _backend(args, args.node, cleanup)
        try:
            gpus = gpu_statuses(backend.read())
        finally:
            backend.close()
    print(json.dumps({"labels": node_labels(gpus), "gpus": json.loads(dump_gpus(gpus))}, indent=2))
    sys.stdout.flush()  # a closed pipe shows here, inside main, not at interpreter exit
    return 0


def _silence_stdout() -> None:
    """The reader of stdout went away (``| head``): point stdout at /dev/null, so the flush at exit
    does not raise a second BrokenPipeError (Python's documented remedy)."""
    with contextlib.suppress(OSError, ValueError):  # stdout is not a real file (tests)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _probe() -> dict[str, tuple[int, int]]:
    """Probe results by bus id; a missing CUDA runtime is logged once and the agent runs without them."""
    from egpu_node_agent import probe

    try:
        results = probe.measure_all(probe.load_cudart())
    except probe.ProbeUnavailable as error:
        logging.getLogger("egpu_node_agent").warning("bandwidth probe skipped", extra={"reason": str(error)})
        return {}
    return {bus: (result.pinned_mbps, result.pageable_mbps) for bus, result in results.items()}


def _check(args: argparse.Namespace) -> int:
    from egpu_node_agent import check, probe

    with contextlib.ExitStack() as cleanup:
        backend = _backend(args, args.node, cleanup)
        try:
            readings = backend.read()
        finally:
            backend.close()
    probes: dict[str, object] = {}
    if args.probe:
        try:
            probes.update(probe.measure_all(probe.load_cudart()))
        except probe.ProbeUnavailable as error:
            probes = {reading.pci_bus_id: str(error) for reading in readings}
    text, ok = check.report(readings, check.nvidia_smi_xml() if args.backend == "nvml" else None, probes)
    print(text)
    sys.stdout.flush()
    return 0 if ok else 1


def _run(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from egpu_node_agent.agent import AgentConfig, NodeAgent
    from egpu_node_agent.metrics import AgentMetrics
    from egpu_node_agent.publisher import NodePublisher
    from egpu_runtime.kube import api_client

    if not args.node_name:
        print(
            "egpu-node-agent: no node name; set NODE_NAME (downward API spec.nodeName) or pass --node-name",
            file=sys.stderr,
        )
        return EXIT_USAGE
    with contextlib.ExitStack() as cleanup:
        backend = _backend(args, args.node_name, cleanup)
        metrics = AgentMetrics(version=version())
        if args.metrics_port:
            start_http_server(args.metrics_port, registry=metrics.registry)
        publisher = NodePublisher(api_client(args.kubeconfig), args.node_name, args.namespace)
        config = AgentConfig(
            args.node_name,
            poll_interval_s=args.poll_interval,
            read_only=args.read_only,
            storage_read_mbps=_storage_rate(args),
        )
        assignments = _assignment_source(args)
        if assignments is not None:
            cleanup.callback(assignments.close)
        agent = NodeAgent(config, backend, publisher, metrics, _probe() if args.probe_bandwidth else None, assignments)
        stop = _stop_on_signals()
        # SIGTERM wakes the loop at once: restoring limits on exit must fit in the pod's grace period,
        # whatever the poll interval.
        threading.Thread(target=_wake_on, args=(stop, publisher.changed), name="wake-on-stop", daemon=True).start()
        logging.getLogger("egpu_node_agent").info(
            "node agent started", extra={"node": args.node_name, "backend": args.backend, "read_only": args.read_only}
        )
        try:
            agent.run(stop)
            restore_on_exit(args, agent, publisher)
        finally:
            publisher.close()
            backend.close()
    return 0


def restore_on_exit(args: argparse.Namespace, agent: "NodeAgent", publisher: "NodePublisher") -> None:
    """After SIGTERM: restore the limits the agent set if no agent will manage power after it (release.py)."""
    from egpu_node_agent.release import restore_reason

    log = logging.getLogger("egpu_node_agent")
    if args.read_only or args.restore_power_on_exit == "never":
        return
    if args.restore_power_on_exit == "uninstall" and not args.daemonset_name:
        log.warning("power limits left: --restore-power-on-exit=uninstall needs --daemonset-name or $DAEMONSET_NAME")
        return
    found, status = publisher.daemonset(args.daemonset_name) if args.restore_power_on_exit == "uninstall" else (None, None)
    why = restore_reason(args.restore_power_on_exit, found, status)
    if why is None:
        log.info("power limits kept for the next agent", extra={"node": args.node_name, "daemonset_read_status": status})
        return
    agent.restore_power(why)


def _restore_power(args: argparse.Namespace) -> int:
    from egpu_node_agent.agent import AgentConfig, NodeAgent
    from egpu_node_agent.metrics import AgentMetrics
    from egpu_node_agent.publisher import NodePublisher
    from egpu_runtime.kube import api_client

    if not args.node_name:
        print("egpu-node-agent: no node name; set NODE_NAME or pass --node-name", file=sys.stderr)
        return EXIT_USAGE
    with contextlib.ExitStack() as cleanup:
        backend = _backend(args, args.node_name, cleanup)
        publisher = NodePublisher(api_client(args.kubeconfig), args.node_name, args.namespace)
        try:
            agent = NodeAgent(AgentConfig(args.node_name), backend, publisher, AgentMetrics())
            plan = agent.restore_power("egpu-node-agent restore-power was run")
        finally:
            publisher.close()
            backend.close()
    restored = ", ".join(f"{a.uuid} {a.watts} W" for a in plan.actions) or "none"
    print(f"restored: {restored}")
    for uuid, reason in plan.left.items():
        print(f"left: {uuid} {reason}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from egpu_node_agent.metrics import AgentMetrics
    from egpu_node_agent.simulator import FleetSimulator
    from egpu_runtime.kube import api_client

    fleet = load_fleet(args.fleet)
    metrics = AgentMetrics(version=version())
    if args.metrics_port:
        start_http_server(args.metrics_port, registry=metrics.registry)
    with tempfile.TemporaryDirectory(prefix="egpu-fleet-sysfs-") as sysfs:
        simulator = FleetSimulator(
            fleet, api_client(args.kubeconfig), args.namespace, Path(sysfs), args.poll_interval, args.read_only, metrics
        )
        stop = _stop_on_signals()
        simulator.start()
        stop.wait()
        simulator.stop()
    return 0


def _wake_on(stop: threading.Event, wake: threading.Event) -> None:
    stop.wait()
    wake.set()


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handle(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no detail"
