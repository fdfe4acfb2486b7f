"""``egpu-operator``: run the operator (in a cluster, or against a kubeconfig for development).

  egpu-operator run                          # in-cluster credentials
  egpu-operator run --kubeconfig k.yaml      # a development cluster
  egpu-operator crds                         # print the CRDs this version expects

Any number of replicas, one leader: only the replica holding the leader Lease writes (``leader``);
every replica keeps its informers warm; kopf runs standalone, without peering, for GPUMaintenance
events, in a thread of its own under ``supervisor`` (a reinstalled CRD restarts it; SIGTERM ends the
process within seconds). Logs are JSON lines; /metrics, /healthz and /readyz are on --metrics-port
(default 8080).

Every setting is a flag whose default comes from an environment variable (the chart sets
those); this module is the only one that reads them, into one ``OperatorConfig``.
"""

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from egpu_api.crd import CRDS, render
from egpu_operator.config import OperatorConfig
from egpu_operator.leader import LeaderConfig
from egpu_operator.liveness import LivenessConfig


@dataclass(frozen=True)
class _Setting:
    field: str  # of OperatorConfig, or of LivenessConfig
    flag: str
    env: str
    parse: Callable[[str], object]
    default: object
    text: str

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    def help(self) -> str:
        return f"{self.text} (default {self.default}; env {self.env})"


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


_SETTINGS = (
    _Setting("workers", "--workers", "EGPU_OPERATOR_WORKERS", int, 4, "reconcile workers draining the work queue"),
    _Setting("resync_s", "--resync-seconds", "EGPU_OPERATOR_RESYNC_SECONDS", float, 30,
             "every deployment is reconciled again this often"),
    _Setting("maintenance_poll_s", "--maintenance-poll-seconds", "EGPU_OPERATOR_MAINTENANCE_POLL_SECONDS", float, 2,
             "an open GPUMaintenance is looked at again this often"),
    _Setting("max_parallel_maintenances", "--max-parallel-maintenances", "EGPU_OPERATOR_MAX_PARALLEL_MAINTENANCES", int, 1,
             "GPUMaintenances draining at once, cluster-wide"),
    _Setting("agent_namespace", "--agent-namespace", "EGPU_OPERATOR_AGENT_NAMESPACE", str, "egpu-system",
             "namespace of the node agents' Leases; others are ignored"),
    _Setting("shared_gpu_resources", "--shared-gpu-resources", "EGPU_OPERATOR_SHARED_GPU_RESOURCES", lambda text: _names(text),
             "nvidia.com/gpu.shared", "comma-separated names time-sliced or MPS GPUs are advertised under"),
    _Setting("dra_drivers", "--dra-drivers", "EGPU_OPERATOR_DRA_DRIVERS", lambda text: _names(text), "gpu.nvidia.com",
             "comma-separated DRA drivers whose devices are GPUs; empty: resource.k8s.io is not watched"),
    _Setting("dra_device_class", "--dra-device-class", "EGPU_OPERATOR_DRA_DEVICE_CLASS", str, "gpu.nvidia.com",
             "DeviceClass of a replica's ResourceClaim (gpuAllocation: DRA)"),
)  # fmt: skip


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


_LIVENESS_DEFAULTS = LivenessConfig()  # the help shows liveness.py's defaults, not a copy of them
_LIVENESS_SETTINGS = tuple(
    _Setting(field, flag, env, float, getattr(_LIVENESS_DEFAULTS, field), text)
    for field, flag, env, text in (
        ("lease_ttl_s", "--lease-ttl-seconds", "EGPU_OPERATOR_LEASE_TTL_SECONDS",
         "an agent Lease this fresh is alive"),
        ("grace_s", "--agent-grace-seconds", "EGPU_OPERATOR_AGENT_GRACE_SECONDS",
         "clear sight beyond the TTL before an unchanged Lease means a dead agent"),
        ("probe_interval_s", "--probe-interval-seconds", "EGPU_OPERATOR_PROBE_INTERVAL_SECONDS",
         "how often the API server's /readyz is asked"),
        ("blind_after_s", "--blind-after-seconds", "EGPU_OPERATOR_BLIND_AFTER_SECONDS",
         "no successful probe for this long: the operator is blind and judges no agent dead"),
        ("disruption_fraction", "--disruption-fraction", "EGPU_OPERATOR_DISRUPTION_FRACTION",
         "this fraction of agents dead at once is a control-plane problem: nothing is removed"),
        ("rollout_grace_s", "--agent-rollout-grace-seconds", "EGPU_OPERATOR_AGENT_ROLLOUT_GRACE_SECONDS",
         "beyond TTL + grace, how long an agent whose pod is being replaced or starting is unknown, not dead"),
    )
)  # fmt: skip


_LEADER_DEFAULTS = LeaderConfig()
_LEADER_SETTINGS = tuple(
    _Setting(field, flag, env, parse, getattr(_LEADER_DEFAULTS, field), text)
    for field, flag, env, parse, text in (
        ("namespace", "--leader-election-namespace", "EGPU_OPERATOR_LEADER_ELECTION_NAMESPACE", str,
         "namespace of the leader Lease (the release namespace)"),
        ("lease_name", "--leader-election-lease-name", "EGPU_OPERATOR_LEADER_ELECTION_LEASE_NAME", str,
         "name of the leader Lease"),
        ("identity", "--leader-election-identity", "EGPU_OPERATOR_LEADER_ELECTION_IDENTITY", str,
         "holderIdentity of this replica, unique among live replicas (the pod name); empty: <hostname>_<random>"),
        ("lease_duration_s", "--leader-lease-duration-seconds", "EGPU_OPERATOR_LEADER_LEASE_DURATION_SECONDS", float,
         "a leader Lease unchanged this long is taken over"),
        ("renew_deadline_s", "--leader-renew-deadline-seconds", "EGPU_OPERATOR_LEADER_RENEW_DEADLINE_SECONDS", float,
         "a leader whose last renewal is older than this writes nothing until it renews"),
        ("retry_period_s", "--leader-retry-period-seconds", "EGPU_OPERATOR_LEADER_RETRY_PERIOD_SECONDS", float,
         "how often the leader Lease is renewed, or looked at by a follower"),
    )
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="egpu-operator", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator")
    run.add_argument("--kubeconfig", type=Path, default=None, help="default: in-cluster credentials")
    run.add_argument("--metrics-port", type=int, default=8080, help="port of /metrics, /healthz and /readyz; 0 disables")
    run.add_argument("--log-level", default=None, help=f"one of {', '.join(LOG_LEVELS)} (default info; env EGPU_LOG_LEVEL)")
    for setting in _SETTINGS:
        run.add_argument(setting.flag, default=None, help=setting.help())
    run.add_argument(
        "--auto-maintenance",
        action="store_true",
        help="file a GPUMaintenance when a node agent reports a lost GPU or a degraded link "
        "(env EGPU_OPERATOR_AUTO_MAINTENANCE=true)",
    )
    safety = run.add_argument_group("failure safety (README.md: Failure safety)")
    for setting in _LIVENESS_SETTINGS:
        safety.add_argument(setting.flag, default=None, help=setting.help())
    election = run.add_argument_group("leader election (docs/helm.md: Two replicas, one leader)")
    for setting in _LEADER_SETTINGS:
        election.add_argument(setting.flag, default=None, help=setting.help())
    commands.add_parser("crds", help="print the CustomResourceDefinitions")
    args = parser.parse_args(argv)

    if args.command == "crds":
        print("---\n".join(render(factory) for factory in CRDS.values()), end="")
        return 0
    level = args.log_level or os.environ.get("EGPU_LOG_LEVEL") or "info"
    if level.lower() not in LOG_LEVELS:
        source = "--log-level" if args.log_level else "EGPU_LOG_LEVEL"
        print(f"egpu-operator: {source} {level!r} is not a log level; use one of {', '.join(LOG_LEVELS)}", file=sys.stderr)
        return 2
    config = build_config(args, os.environ)
    if isinstance(config, str):
        print(f"egpu-operator: {config}", file=sys.stderr)
        return 2
    return _run(args, config)


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _version() -> str:
    """The installed distribution's version (one version for the package, images and chart)."""
    try:
        return metadata.version("egpu-operator")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_config(args: argparse.Namespace, environ: Mapping[str, str]) -> OperatorConfig | str:
    """The settings from flags, else their environment variables, else the defaults; or one
    sentence naming the setting that is wrong."""
    values: dict[str, object] = {}
    for setting in (*_SETTINGS, *_LIVENESS_SETTINGS, *_LEADER_SETTINGS):
        raw = getattr(args, setting.dest)
        raw = raw if raw is not None else environ.get(setting.env)
        if raw is None:
            continue
        try:
            values[setting.field] = setting.parse(str(raw))
        except ValueError:
            kind = "a whole number" if setting.parse is int else "a number"
            return f"{setting.env} (or {setting.flag}) must be {kind}, not {raw!r}"
    liveness = {setting.field: values.pop(setting.field) for setting in _LIVENESS_SETTINGS if setting.field in values}
    try:
        liveness_config = LivenessConfig(**liveness)  # type: ignore[arg-type]
    except ValueError as error:
        return f"failure-safety settings: {error}; see egpu-operator run --help"
    leader = {setting.field: values.pop(setting.field) for setting in _LEADER_SETTINGS if setting.field in values}
    try:
        leader_config = LeaderConfig(**leader)  # type: ignore[arg-type]
    except ValueError as error:
        return f"{error}; see egpu-operator run --help"
    auto = bool(args.auto_maintenance) or _flag(environ.get("EGPU_OPERATOR_AUTO_MAINTENANCE", "false"))
    try:
        return OperatorConfig(
            liveness=liveness_config,
            leader=leader_config,
            auto_maintenance=auto,
            metrics_port=args.metrics_port,
            **values,  # type: ignore[arg-type]
        )
    except ValueError as error:
        return f"{error}; see egpu-operator run --help"


def _run(args: argparse.Namespace, config: OperatorConfig) -> int:
    if args.kubeconfig is not None:
        # Before the Kubernetes client is imported: it reads KUBECONFIG into its default path
        # at import time, and kopf's own login goes through that client.
        os.environ["KUBECONFIG"] = str(args.kubeconfig)
    import kopf  # heavy: imported only for `run`
    from kubernetes import client

    from egpu_operator import handlers, metrics, supervisor
    from egpu_operator.kube import ApiCrds, ApiKube, ApiLeases
    from egpu_operator.runtime import Operator
    from egpu_runtime import kube, logs

    logs.configure((args.log_level or os.environ.get("EGPU_LOG_LEVEL") or "info").lower())
    try:
        configuration = kube.configuration(args.kubeconfig)
    except Exception as error:
        print(f"egpu-operator: cannot load Kubernetes credentials: {error}", file=sys.stderr)
        return 4
    api = client.ApiClient

    def core() -> supervisor.KopfCore:
        """A fresh operator and kopf registry: each core lists everything anew."""
        operator = Operator(config, ApiKube(api(configuration)), api(configuration), ApiLeases(api(configuration)))
        registry = kopf.OperatorRegistry()
        handlers.register(registry, operator)
        return supervisor.KopfCore(
            operator,
            lambda loop, stop: kopf.run(loop=loop, registry=registry, clusterwide=True, standalone=True, stop_flag=stop),
        )

    supervising = supervisor.Supervisor(supervisor.CrdPresence(ApiCrds(api(configuration))), core)
    metrics.serve_defaults(_version())
    supervising.serve_http(config.metrics_port)
    _own_signals(supervising.request_stop)
    logging.getLogger("kopf").setLevel(logging.WARNING)
    logging.getLogger("egpu_operator").info("operator starting", extra={"metrics_port": config.metrics_port})
    code = supervising.run()
    # A reconcile thread blocked in an API call (an API server waiting on a lost etcd answers after a
    # minute) would hold up the exit; every write is whole on its own and the next start resumes
    # from the API server, so there is nothing to wait for.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _own_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT reach the main thread whatever kopf's loop is doing: kopf runs in a thread
    of its own (``supervisor``), so it installs no handlers and says so; that warning is not news."""
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop())
    logging.getLogger("kopf._core.reactor.running").addFilter(lambda record: "OS signals are ignored" not in record.getMessage())
