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
