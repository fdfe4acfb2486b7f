"""``egpu-operator``: run the operator (in a cluster, or against a kubeconfig for development).

  egpu-operator run                          # in-cluster credentials
  egpu-operator run --kubeconfig k.yaml      # a development cluster
  egpu-operator crds                         # print the CRDs this version expects

One replica at a time (the chart uses a Recreate strategy): kopf runs standalone, without
peering. Logs are JSON lines; metrics are on --metrics-port (default 8080) at /metrics.
"""

import argparse
import logging
import os
import sys
from pathlib import Path

from egpu_api.crd import CRDS, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="egpu-operator", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator")
    run.add_argument("--kubeconfig", type=Path, default=None, help="default: in-cluster credentials")
    run.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port; 0 disables")
    run.add_argument("--log-level", default=os.environ.get("EGPU_LOG_LEVEL", "info"))
    run.add_argument(
        "--max-parallel-maintenances",
        type=int,
        default=None,
        help="GPUMaintenances draining at once, cluster-wide (default 1; env EGPU_OPERATOR_MAX_PARALLEL_MAINTENANCES)",
    )
    run.add_argument(
        "--auto-maintenance",
        action="store_true",
        help="file a GPUMaintenance when a node agent reports a lost GPU or a degraded link "
        "(env EGPU_OPERATOR_AUTO_MAINTENANCE=true)",
    )
    run.add_argument(
        "--agent-namespace",
        default=None,
        help="namespace of the node agents' Leases; others are ignored (default egpu-system; env EGPU_OPERATOR_AGENT_NAMESPACE)",
    )
    safety = run.add_argument_group("failure safety (README.md: Failure safety)")
    for flag, env, default, text in _LIVENESS_FLAGS:
        safety.add_argument(flag, type=float, default=None, help=f"{text} (default {default}; env {env})")
    commands.add_parser("crds", help="print the CustomResourceDefinitions")
    args = parser.parse_args(argv)

    if args.command == "crds":
        print("---\n".join(render(factory) for factory in CRDS.values()), end="")
        return 0
    return _run(args)


_LIVENESS_FLAGS = (
    ("--lease-ttl-seconds", "EGPU_OPERATOR_LEASE_TTL_SECONDS", 40, "an agent Lease this fresh is alive"),
    ("--agent-grace-seconds", "EGPU_OPERATOR_AGENT_GRACE_SECONDS", 20,
     "clear sight beyond the TTL before an unchanged Lease means a dead agent"),
    ("--probe-interval-seconds", "EGPU_OPERATOR_PROBE_INTERVAL_SECONDS", 2, "how often the API server's /readyz is asked"),
    ("--blind-after-seconds", "EGPU_OPERATOR_BLIND_AFTER_SECONDS", 6,
     "no successful probe for this long: the operator is blind and judges no agent dead"),
    ("--disruption-fraction", "EGPU_OPERATOR_DISRUPTION_FRACTION", 0.55,
     "this fraction of agents dead at once is a control-plane problem: nothing is removed"),
)  # fmt: skip


def _liveness_settings(args: argparse.Namespace) -> str | None:
    """Put the failure-safety flags into the environment the handlers read; a problem sentence if they are bad."""
    from egpu_operator.liveness import LivenessConfig

    for flag, env, _, _ in _LIVENESS_FLAGS:
        value = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if value is not None:
            os.environ[env] = str(value)
    fields = ("lease_ttl_s", "grace_s", "probe_interval_s", "blind_after_s", "disruption_fraction")
    values: dict[str, float] = {}
    for field, (flag, env, _, _) in zip(fields, _LIVENESS_FLAGS, strict=True):
        if env in os.environ:
            try:
                values[field] = float(os.environ[env])
            except ValueError:
                return f"{env} (or {flag}) must be a number, not {os.environ[env]!r}"
    try:
        LivenessConfig(**values)
    except ValueError as error:
        return f"failure-safety settings: {error}; see egpu-operator run --help"
    return None


def _run(args: argparse.Namespace) -> int:
    problem = _liveness_settings(args)
    if problem is not None:
        print(f"egpu-operator: {problem}", file=sys.stderr)
        return 2
    if args.kubeconfig is not None:
        # Before the Kubernetes client is imported: it reads KUBECONFIG into its default path
        # at import time, and kopf's own login goes through that client.
        os.environ["KUBECONFIG"] = str(args.kubeconfig)
    if args.max_parallel_maintenances is not None:
        if args.max_parallel_maintenances < 1:
            print("egpu-operator: --max-parallel-maintenances must be at least 1", file=sys.stderr)
            return 2
        os.environ["EGPU_OPERATOR_MAX_PARALLEL_MAINTENANCES"] = str(args.max_parallel_maintenances)
    if args.agent_namespace is not None:
        os.environ["EGPU_OPERATOR_AGENT_NAMESPACE"] = args.agent_namespace
    if args.auto_maintenance:
        os.environ["EGPU_OPERATOR_AUTO_MAINTENANCE"] = "true"
    import kopf  # heavy: imported only for `run`
    from kubernetes import client, config
    from prometheus_client import start_http_server

    from egpu_node_agent import logs
    from egpu_operator import handlers
    from egpu_operator.kube import Kube
    from egpu_operator.metrics import REGISTRY

    logs.configure(args.log_level)
    configuration = client.Configuration()
    loader: object = config
    try:
        if args.kubeconfig is not None:
            loader.load_kube_config(config_file=str(args.kubeconfig), client_configuration=configuration)  # type: ignore[attr-defined]
        else:
            loader.load_incluster_config(client_configuration=configuration)  # type: ignore[attr-defined]
    except Exception as error:
        print(f"egpu-operator: cannot load Kubernetes credentials: {error}", file=sys.stderr)
        return 4
    handlers.set_kube(Kube(client.ApiClient(configuration)), client.ApiClient(configuration))
    if args.metrics_port:
        start_http_server(args.metrics_port, registry=REGISTRY)

    @kopf.on.startup()
    def configure(settings: kopf.OperatorSettings, **_: object) -> None:
        # Progress and diff-base live in status, not in annotations users see and edit.
        settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
        settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(field="status.kopf.diffbase")
        settings.posting.level = logging.WARNING  # our own Events say what happened; kopf's are noise
        settings.watching.server_timeout = 300
        settings.scanning.disabled = True
        # kopf gives up on a watch after its retries (54 s by default) and the operator would then
        # stop seeing Pods or Leases; an edge control plane can be away longer (an etcd restart on
        # an SD card). Keep retrying, 30 s apart, for about ten minutes.
        settings.networking.error_backoffs = (1, 1, 2, 3, 5, 8, 13, 21, *[30] * 18)
        # kopf starts a worker per object and ends it after this much idleness; each start and end
        # wakes every waiter on its indexing toggles. Nodes send events all the time (heartbeats), so
        # at 1,000 nodes the default 5 s cost more CPU than placement itself (docs/measurements.md).
        settings.batching.idle_timeout = 600

    logging.getLogger("kopf").setLevel(logging.WARNING)
    logging.getLogger("egpu_operator").info("operator starting", extra={"metrics_port": args.metrics_port})
    kopf.run(clusterwide=True, standalone=True)
    # kopf has stopped (SIGTERM, SIGINT). A reconcile thread blocked in an API call (an API server
    # waiting on a lost etcd answers after a minute) would hold up the exit; every write is whole
    # on its own and the next start resumes from the API server, so there is nothing to wait for.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
