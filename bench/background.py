"""The ordinary pods of a busy cluster, for bench/placement_scale.py: pure manifests, and their bulk creation.

A real cluster of 5,000 nodes runs tens of thousands of pods besides the GPU replicas, and every
one of them is in the operator's and the scheduler's view. Here they are bound directly
(``spec.nodeName``, as the scheduler would have bound them long ago), so KWOK marks them Running
without the scheduler placing 50,000 pods first, and their requests leave each node half free,
so the replicas still fit.
"""

import json
import subprocess
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

NAMESPACE = "background"
#: Share of a node's CPU and memory that all its background pods request together.
REQUESTED_SHARE = 0.5
#: Background pods a node may hold: a kubelet's 110 less room for replicas and daemons.
MAX_PER_NODE = 100


class BackgroundError(ValueError):
    """The asked-for background pods cannot be laid out; the message names the flag and the fix."""


def pods_per_node(background_pods: int, nodes: int) -> int:
    """The most pods any node gets when ``background_pods`` are dealt round-robin over ``nodes``."""
    if background_pods < 0:
        raise BackgroundError(f"--background-pods {background_pods}: use 0 or more")
    per_node = -(-background_pods // nodes) if nodes else 0
    if per_node > MAX_PER_NODE:
        raise BackgroundError(
            f"--background-pods {background_pods} puts {per_node} pods on each of {nodes} nodes; "
            f"use at most {MAX_PER_NODE * nodes} (a node holds 110 pods, replicas need room)"
        )
    return per_node


def requests(capacity: dict[str, str], per_node: int) -> dict[str, str]:
    """One background pod's CPU and memory requests: ``REQUESTED_SHARE`` of the node split ``per_node`` ways."""
    cpu_millis = int(capacity["cpu"]) * 1000 * REQUESTED_SHARE / per_node
    memory_mib = int(capacity["memory"].removesuffix("Mi")) * REQUESTED_SHARE / per_node
    return {"cpu": f"{max(int(cpu_millis), 1)}m", "memory": f"{max(int(memory_mib), 1)}Mi"}


def background_pod(name: str, node: str, pod_requests: dict[str, str]) -> dict[str, Any]:
    """One ordinary pod already bound to ``node``, as a web server or a batch worker would be."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "background"}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app", "image": "registry.example/app:1", "resources": {"requests": pod_requests}}],
        },
    }


def background_pods(nodes: Sequence[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """``count`` pods dealt round-robin over ``nodes`` (Node manifests), each requesting its node's share."""
    per_node = pods_per_node(count, len(nodes))
    pods = []
    for index in range(count):
        node = nodes[index % len(nodes)]
        name = node["metadata"]["name"]
        pods.append(background_pod(f"bg-{index:06d}", name, requests(node["status"]["capacity"], per_node)))
    return pods


def chunks(items: Sequence[dict[str, Any]], size: int) -> Iterator[dict[str, Any]]:
    """``items`` as ``v1/List`` manifests of at most ``size`` each."""
    for start in range(0, len(items), size):
        yield {"apiVersion": "v1", "kind": "List", "items": list(items[start : start + size])}


def create_concurrently(
    kubectl_create: Callable[[str], subprocess.CompletedProcess[str]],
    items: Sequence[dict[str, Any]],
    chunk_size: int = 500,
    workers: int = 4,
) -> None:
    """Create ``items`` with ``workers`` ``kubectl create`` processes at once: one kubectl sends its
    objects one after another, so a single one leaves the API server idle between round trips."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for result in pool.map(lambda chunk: kubectl_create(json.dumps(chunk)), chunks(items, chunk_size)):
            if result.returncode != 0:
                raise RuntimeError(f"kubectl create failed: {result.stderr.strip()[-500:]}")
