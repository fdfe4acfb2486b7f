"""KWOK stages under which a fake replica pod takes its model's load time to become Ready.

KWOK marks a pod Ready the instant it is bound, which makes every drain look free: the
replacement of an evicted replica is serving before anyone can notice it was gone. On real
hardware a replacement is Ready only once its model crossed the PCIe link. So the local
cluster can run KWOK's own default stages (copied from the pinned KWOK module by
hack/build-tools.sh) with one change: pod-ready waits for the pod's
``egpu-operator.io/estimated-load-seconds`` annotation (times a scale, so tests stay quick).
Pods without the annotation are Ready at once, as before.
"""

from pathlib import Path
from typing import Any

import yaml

from egpu_api import keys


class StagesError(RuntimeError):
    """KWOK's stage manifests are missing; the message says how to get them."""


def model_load_stages(stages_dir: Path, scale: float) -> list[dict[str, Any]]:
    """KWOK's default node and pod stages, with pod-ready delayed by ``scale`` x the load estimate."""
    files = sorted(stages_dir.glob("*.yaml"))
    if not files:
        raise StagesError(f"no KWOK stage manifests in {stages_dir}; run hack/build-tools.sh")
    stages = [yaml.safe_load(path.read_text()) for path in files]
    ready = next((stage for stage in stages if stage["metadata"]["name"] == "pod-ready"), None)
    if ready is None:
        raise StagesError(f"{stages_dir} has no pod-ready stage; run hack/build-tools.sh again")
    ready["spec"]["delay"] = pod_ready_delay(scale)
    return stages


def pod_ready_delay(scale: float) -> dict[str, Any]:
    """The pod-ready stage's delay: the replica's load estimate times ``scale`` (0 without one).
    On kind, where KWOK's stages are objects, ``egpu-localcluster nodes --model-load-scale``
    patches it into the pod-ready Stage."""
    seconds = f'(.metadata.annotations["{keys.ESTIMATED_LOAD_ANNOTATION}"] // "0" | tonumber)'
    return {
        "durationMilliseconds": 0,
        # gojq: "21.0" * 0.1 -> "2.1s", which KWOK reads as a Go duration.
        "durationFrom": {"expressionFrom": f'({seconds} * {scale:g} | tostring) + "s"'},
    }


#: kwokctl's own defaults (``heartbeatFactor`` 5): a kubelet Lease of 200 s renewed every 50 s.
#: At 5,000 nodes that is 100 Lease writes a second, and on two cores KWOK then falls behind:
#: nodes are made Ready slower than they are created, and held ones go NotReady.
QUIET_LEASE_DURATION_S = 1200


def quiet_heartbeat_options(lease_duration_s: int = QUIET_LEASE_DURATION_S) -> dict[str, Any]:
    """kwokctl options for a cluster of thousands of KWOK nodes on a small machine (benchmarks only).

    Each node keeps its kubelet Lease (as in a real cluster, so watchers still see one Lease per
    node) but KWOK renews it every ``lease_duration_s / 4`` instead of every 50 s, and the node
    lifecycle controller waits as long before calling a node unreachable. Node status heartbeats
    already come every 10 min or more (KWOK's node-heartbeat-with-lease stage). ``heartbeatFactor``
    is 1 because kwokctl would otherwise multiply every value below by its default of 5.
    """
    if lease_duration_s < 40:
        raise ValueError(f"lease_duration_s={lease_duration_s}: use at least 40 s, a kubelet's default")
    return {
        "heartbeatFactor": 1,
        "nodeLeaseDurationSeconds": lease_duration_s,
        "kubeControllerManagerNodeMonitorGracePeriodMilliseconds": lease_duration_s * 1000,
        # How often it looks at every node: kwokctl's 25 s. With 60 s, 1,500 of 5,000 new nodes
        # still carried a not-ready taint 2 min after all were Ready.
        "kubeControllerManagerNodeMonitorPeriodMilliseconds": 25_000,
    }


def kwok_parallelism(workers: int) -> dict[str, Any]:
    """A KwokConfiguration letting the KWOK controller hold Leases and play node and pod stages with
    ``workers`` requests in flight (its default is 4): each is a round trip to the API server, so
    thousands of nodes or tens of thousands of pods wait on latency, not on CPU."""
    if workers < 1:
        raise ValueError(f"workers={workers}: use at least 1")
    return {
        "kind": "KwokConfiguration",
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "options": {
            "nodeLeaseParallelism": workers,
            "nodePlayStageParallelism": workers,
            "podPlayStageParallelism": workers,
        },
    }


def controller_manager_qps(qps: int = 500) -> list[dict[str, Any]]:
    """kwokctl ``componentsPatches`` lifting kube-controller-manager's client limit (20 requests a
    second by default). Each new node costs it a few writes (beta labels, the not-ready taint on and
    off): at that limit 5,000 new nodes lost their not-ready taint at about 5 a second, so the last
    ones became usable 17 min after they were Ready. kube-scheduler keeps its limit: it is measured."""
    if qps < 1:
        raise ValueError(f"qps={qps}: use at least 1")
    args = [{"key": "kube-api-qps", "value": str(qps)}, {"key": "kube-api-burst", "value": str(qps * 2)}]
    return [{"name": "kube-controller-manager", "extraArgs": args}]
