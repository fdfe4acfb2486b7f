"""``egpu-localcluster``: run the local control plane with a simulated GPU fleet.

Every failure a user can cause or meet (a bad fleet profile, a failed build, a cluster that
does not come up or does not exist) ends in one line on stderr and exit status 1, never a
traceback.
"""

import argparse
import contextlib
import json
import os
import shutil
import sys
from importlib import metadata
from pathlib import Path

from egpu_api.fleet import DEFAULT_FLEET, FleetProfileError, load_fleet
from egpu_localcluster.cluster import ClusterError, LocalCluster, check_name
from egpu_localcluster.demo import run_demo, start_product
from egpu_localcluster.fleet_view import fleet_table
from egpu_localcluster.kubectl import Kubectl, KubectlError
from egpu_localcluster.stages import pod_ready_delay
from egpu_localcluster.tools import REPO_ROOT, ToolsError, ensure_tools

# Clusters started with `up` outlive the command, so they live in a known place, not a temp dir.
CLUSTERS_DIR = Path.home() / ".cache" / "egpu-operator" / "clusters"
# Simulated replica pods become Ready after a quarter of their estimated model load time
# (18 GB over Gen3 x1: 5.3 s instead of 21 s), so the demo shows loads without dragging.
DEMO_LOAD_SCALE = 0.25


def version() -> str:
    """The installed distribution's version (one version for the package, images and chart)."""
    try:
        return metadata.version("egpu-operator")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="egpu-localcluster", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    fleet_help = f"fleet profile YAML (default: {DEFAULT_FLEET.relative_to(REPO_ROOT)})"

    show = commands.add_parser("fleet", help="validate a fleet profile and print it")
    show.add_argument("--fleet", type=Path, default=DEFAULT_FLEET, help=fleet_help)

    up = commands.add_parser("up", help="start a working cluster (fleet nodes, node agents, CRDs, operator) and leave it running")
    up.add_argument("--fleet", type=Path, default=DEFAULT_FLEET, help=fleet_help)
    up.add_argument("--name", default="egpu", help="cluster name (default: egpu)")

    down = commands.add_parser("down", help="stop a cluster started with 'up'")
    down.add_argument("--name", default="egpu", help="cluster name (default: egpu)")

    nodes = commands.add_parser("nodes", help="create the fleet's fake GPU nodes on an existing cluster (e.g. kind)")
    nodes.add_argument("--fleet", type=Path, default=DEFAULT_FLEET, help=fleet_help)
    nodes.add_argument("--kubeconfig", type=Path, required=True, help="kubeconfig of the cluster")
    nodes.add_argument("--kubectl", type=Path, default=None, help="kubectl binary (default: kubectl on PATH)")
    nodes.add_argument(
        "--model-load-scale",
        type=float,
        default=None,
        help="also delay KWOK's pod-ready Stage (kind) by each replica's estimated load time x this",
    )

    demo = commands.add_parser("demo", help="start a cluster, show the simulated edge fleet, stop it")
    demo.add_argument("--fleet", type=Path, default=DEFAULT_FLEET, help=fleet_help)
    demo.add_argument("--keep", action="store_true", help="leave the cluster running afterwards")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "fleet":
            print(fleet_table(load_fleet(args.fleet)))
            sys.stdout.flush()  # a closed pipe shows here, inside main, not at interpreter exit
        elif args.command == "up":
            fleet = load_fleet(args.fleet)
            cluster = persistent_cluster(args.name)
            cluster.start()
            try:
                product = start_product(cluster, fleet)
            except (ClusterError, KubectlError):
                cluster.stop(check=False)  # half a cluster helps nobody: nothing is left running
                raise
            print(f"export KUBECONFIG={cluster.kubeconfig}")
            print(f"# {len(fleet.nodes)} fake GPU nodes with their node agents, the CRDs and the operator are running:")
            print(f"# kubectl apply -f {REPO_ROOT / 'examples'}; kubectl get idep")
            print(f"# metrics: node agents {product.agent_metrics_url}, operator {product.operator_metrics_url}")
            print(f"# stop it: egpu-localcluster down --name {args.name}")
        elif args.command == "down":
            if check_name(args.name) not in running_clusters():
                running = ", ".join(running_clusters()) or "none"
                print(
                    f"egpu-localcluster: found no cluster named {args.name!r} started with 'up' (running: {running})",
                    file=sys.stderr,
                )
                return 1
            persistent_cluster(args.name).stop()
        elif args.command == "nodes":
            fleet = load_fleet(args.fleet)
            kubectl = Kubectl(args.kubectl or Path(shutil.which("kubectl") or ensure_tools().kubectl), args.kubeconfig)
            kubectl.apply_fleet(fleet)
            kubectl.wait_nodes_ready(node.name for node in fleet.nodes)
            print(f"{len(fleet.nodes)} fake GPU nodes of fleet {fleet.metadata.name!r} are Ready")
            if args.model_load_scale is not None:
                patch = json.dumps({"spec": {"delay": pod_ready_delay(args.model_load_scale)}})
                kubectl.run("patch", "stages.kwok.x-k8s.io", "pod-ready", "--type=merge", "-p", patch)
                print(f"replica pods become Ready after their estimated load time x {args.model_load_scale:g}")
        elif args.command == "demo":
            fleet = load_fleet(args.fleet)
            cluster = (
                persistent_cluster("egpu-demo")
                if args.keep
                else LocalCluster(ensure_tools(), name="egpu-demo", model_load_scale=DEMO_LOAD_SCALE)
            )
            run_demo(fleet, cluster, keep=args.keep)
    except (FleetProfileError, ToolsError, ClusterError, KubectlError) as error:
        for line in str(error).splitlines() or [type(error).__name__]:  # a fleet profile: one line per problem
            print(f"egpu-localcluster: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("egpu-localcluster: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output left (`| head`): say nothing more, as a command killed by
        # SIGPIPE would, and keep the flush at exit from raising again.
        with contextlib.suppress(OSError, ValueError):  # stdout is not a real file (tests)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0


def running_clusters() -> list[str]:
    """Clusters that 'up' started and 'down' has not stopped: kwokctl keeps a folder per live
    cluster in its work folder and removes it on delete."""
    return sorted(path.name for path in CLUSTERS_DIR.glob("*/clusters/*") if path.parent.parent.name == path.name)


def persistent_cluster(name: str) -> LocalCluster:
    workdir = CLUSTERS_DIR / check_name(name)  # checked before anything is made on disk
    workdir.mkdir(parents=True, exist_ok=True)
    return LocalCluster(ensure_tools(), name=name, workdir=workdir, model_load_scale=DEMO_LOAD_SCALE)
