"""The load path on a real API server: shared uplinks, the model's storage, time-sliced GPUs.

Replica pods become Ready after a tenth of their load estimate (KWOK's pod-ready stage reads
the estimate annotation), so a load the operator sized for a shared uplink takes that long.
"""

from datetime import datetime
from typing import Any

from egpu_api.fleet import FleetProfile
from egpu_localcluster.kubectl import Kubectl
from tests.e2e.deployments import apply, deployment, placed_condition, ready_on, replica_pods, status
from tests.e2e.helpers import variant, wait_for

ESTIMATE = "egpu-operator.io/estimated-load-seconds"


def pinned(name: str, size: str, budget_s: int, replicas: int, node: str, **model: Any) -> dict[str, Any]:
    manifest = deployment(name, size, budget_s, replicas)
    manifest["spec"]["placement"]["nodeSelector"] = {"kubernetes.io/hostname": node}
    manifest["spec"]["model"] |= model
    return manifest


def ready_since(pod: dict[str, Any]) -> datetime | None:
    for condition in pod["status"].get("conditions") or []:
        if condition["type"] == "Ready" and condition["status"] == "True":
            return datetime.fromisoformat(condition["lastTransitionTime"].replace("Z", "+00:00"))
    return None


def created(pod: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(pod["metadata"]["creationTimestamp"].replace("Z", "+00:00"))


def test_a_shared_uplink_loads_one_replica_at_a_time_when_two_would_miss_the_budget(kube: Kubectl, workspace: str) -> None:
    # 18 GB through the switch's Gen3 x1 uplink (856 MB/s): 21.5 s alone, 42.6 s for two at once,
    # past the 30 s budget. So the second replica is created only once the first has loaded.
    apply(kube, workspace, pinned("uplink", "18G", 30, 2, "switch-4x-a5000"))
    waiting = wait_for(
        lambda: c if (c := placed_condition(kube, workspace, "uplink")) and "wait for loads" in c["message"] else None,
        30,
        "the second replica to wait for the shared uplink",
    )
    assert waiting["message"].endswith("1 replica(s) wait for loads on shared stages to finish")
    wait_for(lambda: ready_on(kube, workspace, "uplink", 2), 60, "both replicas Ready")

    first, second = sorted(replica_pods(kube, workspace, "uplink"), key=created)
    first_ready = ready_since(first)
    assert first_ready is not None
    assert created(second) >= first_ready, "the second load started before the first had finished"
    assert [pod["metadata"]["annotations"][ESTIMATE] for pod in (first, second)] == ["21.5", "21.5"]


def test_a_generous_budget_shares_the_uplink_and_sizes_each_load_for_the_sharing(kube: Kubectl, workspace: str) -> None:
    apply(kube, workspace, pinned("shared", "18G", 120, 3, "switch-4x-a5000"))
    wait_for(lambda: ready_on(kube, workspace, "shared", 3), 60, "three replicas Ready")

    pods = sorted(replica_pods(kube, workspace, "shared"), key=lambda pod: float(pod["metadata"]["annotations"][ESTIMATE]))
    # 856 MB/s divided among one, two and three loads under way: 21.5, 42.6 and 63.6 s.
    assert [pod["metadata"]["annotations"][ESTIMATE] for pod in pods] == ["21.5", "42.6", "63.6"]
    probe = next(c for c in pods[2]["spec"]["containers"] if c["name"] == "server").get("startupProbe")
    assert probe is None  # the template has none; sized only where the user gave one


def test_slow_storage_is_the_bottleneck_and_named(kube: Kubectl, workspace: str, fleet: FleetProfile) -> None:
    with variant(kube, fleet, "pi5-rtx4090", "pi5-sdcard", host={"storageReadMBps": 90}):
        wait_for(
            lambda: True if "egpu-operator.io/storage-read-mbps=90" in kube.run("get", "node", "pi5-sdcard",
                                                                                "--show-labels").stdout else None,
            30,
            "the agent to publish the SD card's read rate",
        )  # fmt: skip
        apply(kube, workspace, pinned("sd", "6G", 60, 1, "pi5-sdcard"))
        refused = wait_for(
            lambda: c if (c := placed_condition(kube, workspace, "sd")) and c["status"] == "False" else None, 30, "refused"
        )
        assert "1 storage too slow (need >= 100 MB/s)" in refused["message"]

        apply(kube, workspace, pinned("sd", "6G", 120, 1, "pi5-sdcard"))
        wait_for(lambda: ready_on(kube, workspace, "sd", 1), 60, "placed once the budget allows the SD card")
        placement = status(kube, workspace, "sd")["placements"][0]
        assert (placement["loadBottleneck"], placement["estimatedLoadSeconds"]) == ("storage 90 MB/s", 67.2)

        remote = pinned("sd", "6G", 120, 1, "pi5-sdcard", source={"location": "Remote", "readMBps": 600})
        apply(kube, workspace, remote)
        wait_for(
            lambda: True if status(kube, workspace, "sd")["placements"][0].get("loadBottleneck") == "remote source 600 MB/s"
            else None,
            30,
            "the remote source's rate to bound the estimate",
        )  # fmt: skip


def test_a_time_sliced_gpu_takes_only_what_its_memory_holds(kube: Kubectl, workspace: str, fleet: FleetProfile) -> None:
    # One 24 GB RTX 4090 advertised as four GPUs: four 20 GB replicas would not fit in it.
    with variant(kube, fleet, "pi5-rtx4090", "pi5-sliced", timeSlicingReplicas=4):
        apply(kube, workspace, pinned("sliced", "18G", 60, 2, "pi5-sliced"))
        assert wait_for(lambda: ready_on(kube, workspace, "sliced", 1), 60, "one replica Ready") == ["pi5-sliced"]
        unplaced = wait_for(
            lambda: c if (c := placed_condition(kube, workspace, "sliced")) and c["status"] == "False" else None,
            30,
            "the second replica unplaced",
        )
        assert unplaced["message"].startswith("1 of 2 replica(s) cannot be placed: 0/")
        assert "no free GPU" in unplaced["message"]
        allocatable = kube.get_json("node", "pi5-sliced")["status"]["allocatable"]["nvidia.com/gpu"]
        assert allocatable == "4"
        kube.run("delete", "idep", "sliced", "-n", workspace, "--wait=true", "--timeout=60s")
