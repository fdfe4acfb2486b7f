"""Helpers shared by the chart's tests: helm itself, rendering, and credentials of the chart's ServiceAccounts.

Unit tests render the chart with ``helm template``; the e2e tests (tests/e2e/test_helm_*.py)
install it on a local control plane and act as its ServiceAccounts through kubeconfigs
holding their tokens.
"""

import contextlib
import functools
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from egpu_api.fleet import load_fleet
from egpu_localcluster import LocalCluster, ensure_tools
from egpu_localcluster.kubectl import Kubectl

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "egpu-operator"
RELEASE, NAMESPACE = "egpu-operator", "egpu-system"
OPERATOR_SA, AGENT_SA = "egpu-operator", "egpu-operator-node-agent"


@functools.cache
def helm_binary() -> Path:
    """The cached Helm 4; with ``EGPU_HELM=3`` the cached Helm 3 (``hack/build-tools.sh helm3``), so the
    chart tests run against both: ``EGPU_HELM=3 pytest tests/e2e/test_helm_install.py ...``."""
    if helm_major() == 3:
        built = subprocess.run([str(REPO / "hack" / "build-tools.sh"), "helm3"], capture_output=True, text=True, check=True)
        return Path(built.stdout.strip()) / "helm3"
    return ensure_tools().helm


def helm_major() -> int:
    return 3 if os.environ.get("EGPU_HELM", "4") == "3" else 4


@functools.cache
def kube_version() -> str:
    """The pinned Kubernetes version (hack/tools/kube/go.mod), for commands that render offline: Helm 3
    would otherwise assume Kubernetes 1.20 and refuse the chart's kubeVersion."""
    text = (REPO / "hack" / "tools" / "kube" / "go.mod").read_text()
    match = re.search(r"^\s*k8s\.io/kubernetes (v[0-9.]+)", text, re.MULTILINE)
    assert match, "hack/tools/kube/go.mod pins no k8s.io/kubernetes"
    return match.group(1)


def helm(*args: str, kubeconfig: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the cached helm (built by hack/build-tools.sh); its own config and cache stay out of $HOME."""
    command = [str(helm_binary()), *args]
    if args and args[0] in ("template", "lint"):
        command += ["--kube-version", kube_version()]
    if kubeconfig is not None:
        command += ["--kubeconfig", str(kubeconfig)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def set_args(values: dict[str, str] | None) -> list[str]:
    return [arg for key, value in (values or {}).items() for arg in ("--set", f"{key}={value}")]


def render(values: dict[str, str] | None = None, *args: str) -> list[dict[str, Any]]:
    """The objects ``helm template`` renders with these ``--set`` values (and other arguments)."""
    output = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *set_args(values), *args).stdout
    return [document for document in yaml.safe_load_all(output) if document]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def token_kubeconfig(
    kube: Kubectl, service_account: str, path: Path, bound_pod: str | None = None, namespace: str = NAMESPACE
) -> Path:
    """A kubeconfig for the cluster of ``kube`` that authenticates with a fresh token of the
    ServiceAccount in ``namespace`` (a TokenRequest, as the kubelet makes for a pod); ``bound_pod``
    binds the token to that pod, so it carries the pod's node name as the kubelet's tokens do."""
    command = ["create", "token", service_account, "-n", namespace, "--duration", "1h"]
    if bound_pod:
        command += ["--bound-object-kind", "Pod", "--bound-object-name", bound_pod]
    token = kube.run(*command).stdout.strip()
    config = yaml.safe_load(kube.kubeconfig.read_text())
    context = config["contexts"][0]["context"]
    config["users"] = [{"name": service_account, "user": {"token": token}}]
    config["contexts"] = [{"name": service_account, "context": {"cluster": context["cluster"], "user": service_account}}]
    config["current-context"] = service_account
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def release_on_local_cluster(values: dict[str, str] | None = None) -> Iterator[LocalCluster]:
    """A fresh local control plane with the default fleet's nodes and the chart installed.

    A cluster of its own, because the session cluster has the CRDs applied by kubectl, which
    Helm would refuse to adopt. The release namespace enforces Pod Security "restricted" and a
    RuntimeClass "nvidia" exists, as on a GPU cluster with the NVIDIA container toolkit: with
    ``--wait`` the install succeeds only if every pod of the chart was admitted and came up
    (KWOK runs the pods of its fake nodes).
    """
    with LocalCluster(ensure_tools()) as cluster:
        kube = cluster.kubectl
        fleet = load_fleet()
        kube.apply_fleet(fleet)
        kube.wait_nodes_ready(node.name for node in fleet.nodes)
        kube.apply({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "nvidia"}, "handler": "nvidia"})
        kube.run("create", "namespace", NAMESPACE)
        kube.run("label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted")
        install(cluster, values)
        yield cluster


def install(cluster: LocalCluster, values: dict[str, str] | None = None, command: str = "install") -> str:
    """helm install (or upgrade) the chart and wait for its workloads; returns helm's output."""
    return helm(
        command, RELEASE, str(CHART), "--namespace", NAMESPACE, "--wait", "--timeout", "90s", *set_args(values),
        kubeconfig=cluster.kubeconfig,
    ).stdout  # fmt: skip


def agent_pod_on(kube: Kubectl, node: str, timeout_s: float = 30, namespace: str = NAMESPACE) -> str:
    """The name of the node agent DaemonSet's pod on ``node`` (in the agent's ``namespace``), once the
    DaemonSet controller has made it."""
    deadline = time.monotonic() + timeout_s
    while True:
        pods = kube.get_json(
            "pods", "-n", namespace, "-l", "app.kubernetes.io/component=node-agent", "--field-selector", f"spec.nodeName={node}"
        )["items"]
        live = [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]
        if len(live) == 1:
            name: str = live[0]["metadata"]["name"]
            return name
        assert len(live) < 2, f"expected one node agent pod on {node}, found {len(live)}"
        assert time.monotonic() < deadline, f"no node agent pod on {node} after {timeout_s:.0f} s"
        time.sleep(0.25)
