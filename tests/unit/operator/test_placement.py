"""Placement over the default fleet: which nodes qualify, where replicas go, how they move."""

from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from egpu_api.loadpath import STARTUP_SECONDS
from egpu_operator.liveness import Liveness
from egpu_operator.placement import Create, Demand, PodView, plan
from tests.unit.operator.conftest import facts

GB = 10**9
GIB = 2**30
ALL_MODES = ("bare-metal", "passthrough", "vgpu", "mig")


def free_all(nodes: dict[str, dict[str, Any]]) -> dict[str, int]:
    return {name: int(node["status"]["allocatable"]["nvidia.com/gpu"]) for name, node in nodes.items()}


@pytest.mark.parametrize(
    ("demand", "adequate", "summary"),
    [
        pytest.param(
            Demand.of(18 * GB, 2 * GIB, ["bare-metal", "passthrough"], max_load_seconds=30),
            {"pi5-rtx4090", "switch-4x-a5000", "vm-h100-passthrough"},
            "3/8 nodes adequate: 3 VRAM < 18.8 GiB, 1 mig not allowed, 1 vgpu not allowed",
            id="18 GB in 30 s: the Pi, the switch host and the H100",
        ),
        pytest.param(
            Demand.of(6 * GB, GIB, ["bare-metal", "passthrough", "vgpu"], max_load_seconds=20),
            {"pi5-rtx4090", "x220-tesla-p4", "minipc-rtx4070ti", "laptop-rtx3060-tb", "switch-4x-a5000",
             "vm-h100-passthrough", "vm-vgpu-a10"},
            "7/8 nodes adequate: 1 mig not allowed",
            id="6 GB in 20 s: even the ExpressCard P4 (435 MB/s, 13.8 s)",
        ),
        pytest.param(
            Demand.of(6 * GB, GIB, ["bare-metal"], max_load_seconds=5),
            {"minipc-rtx4070ti", "laptop-rtx3060-tb"},
            "2/8 nodes adequate: 3 link too slow (need >= 1200 MB/s), 1 mig not allowed, 1 passthrough not allowed, "
            "1 vgpu not allowed",
            id="6 GB in 5 s bare-metal: x1 links are too slow",
        ),
        pytest.param(
            Demand.of(140 * GIB, GIB, ALL_MODES, max_load_seconds=600),
            set(),
            "0/8 nodes adequate: 8 VRAM < 141 GiB",
            id="140 GiB fits nowhere",
        ),
        pytest.param(
            Demand.of(30 * GIB, GIB, ALL_MODES, min_bandwidth_mbps=1500),
            {"server-a100-mig", "vm-h100-passthrough"},
            "2/8 nodes adequate: 6 VRAM < 31 GiB",
            id="explicit bandwidth: a MIG slice of 40 GiB qualifies",
        ),
    ],
)  # fmt: skip
def test_adequate_nodes(nodes: dict[str, dict[str, Any]], demand: Demand, adequate: set[str], summary: str) -> None:
    result = plan(demand, len(adequate) or 1, facts(nodes), free_all(nodes), [])
    assert {create.node for create in result.creates} == adequate or (not adequate and result.unplaced == 1)
    assert result.summary == summary


def test_replicas_go_where_they_load_fastest_and_spread(nodes: dict[str, dict[str, Any]]) -> None:
    demand = Demand.of(18 * GB, 2 * GIB, ["bare-metal", "passthrough"], max_load_seconds=30)
    result = plan(demand, 3, facts(nodes), free_all(nodes), [])
    assert [(c.replica, c.node) for c in result.creates] == [
        (0, "vm-h100-passthrough"),  # 0.8 s
        (1, "pi5-rtx4090"),  # 21 s, spread before stacking; name breaks the tie with the switch host
        (2, "switch-4x-a5000"),
    ]
    assert result.creates[1].load_seconds == pytest.approx(STARTUP_SECONDS + 18e9 / 856e6)
    assert result.creates[1].bottleneck == "PCIe link 856 MB/s"


def test_loads_behind_one_shared_uplink_are_staggered(nodes: dict[str, dict[str, Any]]) -> None:
    """Four A5000s behind one Gen3 x1 uplink: two loads at once would each get 428 MB/s, 42 s for
    18 GB, past the 30 s budget. So the fourth replica waits for the third's load to finish."""
    demand = Demand.of(18 * GB, 2 * GIB, ["bare-metal", "passthrough"], max_load_seconds=30)
    result = plan(demand, 4, facts(nodes), free_all(nodes), [])

    assert [c.node for c in result.creates] == ["vm-h100-passthrough", "pi5-rtx4090", "switch-4x-a5000"]
    assert result.waiting == 1
    assert result.unplaced == 0
    assert result.summary.endswith("; 1 replica(s) wait for loads on shared stages to finish")

    loaded = [PodView(f"a-{c.replica}", c.replica, c.node, ready=True) for c in result.creates]
    after = plan(
        demand, 4, facts(nodes), free_all(nodes) | {"switch-4x-a5000": 3, "pi5-rtx4090": 0, "vm-h100-passthrough": 0}, loaded
    )
    assert [(c.replica, c.node) for c in after.creates] == [(3, "switch-4x-a5000")]


def test_a_generous_budget_shares_the_uplink_and_sizes_each_load_for_it(nodes: dict[str, dict[str, Any]]) -> None:
    demand = Demand.of(6 * GB, GIB, ["bare-metal"], max_load_seconds=60, node_selector={"kubernetes.io/hostname": "x"})
    switch = [f for f in facts(nodes) if f.name == "switch-4x-a5000"]
    result = plan(replace(demand, node_selector={}), 3, switch, free_all(nodes), [])

    assert [round(c.load_seconds, 1) for c in result.creates] == [7.5, 14.5, 21.5]  # 6 GB at 856, 428, 285 MB/s
    assert result.creates[2].bottleneck == "shared PCIe link 285 MB/s shared by 3 loads"


def test_loads_under_way_on_another_deployment_count(nodes: dict[str, dict[str, Any]]) -> None:
    demand = Demand.of(6 * GB, GIB, ["bare-metal"], max_load_seconds=60)
    switch = [f for f in facts(nodes) if f.name == "switch-4x-a5000"]
    result = plan(demand, 1, switch, free_all(nodes), [], loading={"switch-4x-a5000": 2})

    assert round(result.creates[0].load_seconds, 1) == 21.5


def test_the_slowest_stage_names_the_rejection(nodes: dict[str, dict[str, Any]]) -> None:
    h100 = next(f for f in facts(nodes) if f.name == "vm-h100-passthrough")
    sd_card = replace(h100, storage_mbps=90)
    demand = Demand.of(18 * GB, 2 * GIB, ["passthrough"], max_load_seconds=60)

    result = plan(demand, 1, [sd_card], {"vm-h100-passthrough": 1}, [])

    assert result.summary == "0/1 nodes adequate: 1 storage too slow (need >= 300 MB/s)"
    assert demand.estimate(sd_card).explain() == "storage 90 MB/s is the bottleneck: 200 s"
    remote = replace(demand, remote_mbps=1200)
    assert remote.estimate(sd_card).explain() == "remote source 1200 MB/s is the bottleneck: 16 s"
    measured = replace(h100, pageable_mbps=6824, pinned_mbps=20942)
    assert str(demand.estimate(measured).bottleneck) == "host copy (pageable) 6824 MB/s"
    assert str(replace(demand, host_copy="pinned").estimate(measured).bottleneck) == "host copy (pinned) 20942 MB/s"


def test_placed_replicas_stay_put(nodes: dict[str, dict[str, Any]]) -> None:
    demand = Demand.of(18 * GB, 2 * GIB, ["bare-metal"], max_load_seconds=30)
    pods = [PodView("a-0", 0, "pi5-rtx4090", ready=True)]
    free = free_all(nodes) | {"pi5-rtx4090": 0}
    result = plan(demand, 1, facts(nodes), free, pods)
    assert (result.creates, result.deletes, result.unplaced) == ([], [], 0)


def test_no_free_gpu_is_counted(nodes: dict[str, dict[str, Any]]) -> None:
    demand = Demand.of(6 * GB, GIB, ["bare-metal"], max_load_seconds=20)
    free = dict.fromkeys(nodes, 0)
    result = plan(demand, 1, facts(nodes), free, [])
    assert result.unplaced == 1
    assert "5 no free GPU" in result.summary


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda n: n["spec"].update(unschedulable=True), "cordoned or in maintenance"),
        (lambda n: n["metadata"]["labels"].update({"egpu-operator.io/maintenance": "gm-1"}), "cordoned or in maintenance"),
        (lambda n: n["metadata"]["labels"].update({"egpu-operator.io/health": "lost"}), "GPU lost"),
        (lambda n: n["metadata"]["labels"].update({"egpu-operator.io/health": "degraded"}), "GPU degraded"),
        (lambda n: n["metadata"]["labels"].clear(), "no egpu-operator labels (node agent not running?)"),
        (lambda n: n["metadata"]["labels"].update({"egpu-operator.io/gpu-vram-mib": "lots"}), "malformed egpu-operator labels"),
        (lambda n: n["metadata"]["labels"].update({"egpu-operator.io/gpu-mode": "quantum"}), "malformed egpu-operator labels"),
        (lambda n: n["metadata"]["labels"].update({"egpu-operator.io/label-schema": "v9"}), "label schema 'v9' not understood"),
    ],
)  # fmt: skip
def test_odd_nodes_are_skipped_with_a_reason(nodes: dict[str, dict[str, Any]], change: Any, reason: str) -> None:
    change(nodes["vm-h100-passthrough"])
    demand = Demand.of(6 * GB, GIB, ["passthrough"], max_load_seconds=20)
    result = plan(demand, 1, facts(nodes), free_all(nodes), [])
    assert result.creates == []
    assert Counter(result.rejections)[reason] == 1


def test_dead_agent_surges_a_replacement_and_deletes_nothing(nodes: dict[str, dict[str, Any]]) -> None:
    demand = Demand.of(18 * GB, 2 * GIB, ["bare-metal", "passthrough"], max_load_seconds=30)
    dead = [replace(f, liveness=Liveness.DEAD) if f.name == "pi5-rtx4090" else f for f in facts(nodes)]
    old = PodView("a-0", 0, "pi5-rtx4090", ready=True)
    result = plan(demand, 1, dead, free_all(nodes), [old])
    assert result.deletes == []
    assert result.evictions == []
    assert result.creates == [
        Create(0, "vm-h100-passthrough", pytest.approx(STARTUP_SECONDS + 18e9 / 54823e6), "PCIe link 54823 MB/s", demand.vram_mib)
    ]
    assert result.rejections["node agent heartbeat missing or stale"] == 1
    new = PodView("a-0-new", 0, "vm-h100-passthrough")
    assert plan(demand, 1, dead, free_all(nodes), [old, new]).evictions == []  # the replacement still loads
    done = plan(demand, 1, dead, free_all(nodes), [old, replace(new, ready=True)])
    assert (done.deletes, done.evictions, done.creates) == ([], ["a-0"], [])  # evicted: the budget has its say


@pytest.mark.parametrize(
    ("change", "stays"),
    [
        (lambda f: replace(f, liveness=Liveness.UNKNOWN), True),
        (lambda f: replace(f, problem="malformed egpu-operator labels"), True),
        (lambda f: replace(f, taints=(("node.kubernetes.io/unreachable", "", "NoExecute"),)), True),
        (lambda f: replace(f, taints=(("node.kubernetes.io/not-ready", "", "NoSchedule"),)), True),
        (lambda f: replace(f, problem="malformed egpu-operator labels", unschedulable=True), False),
        (lambda f: replace(f, problem="malformed egpu-operator labels", maintenance=True), False),
        (lambda f: replace(f, liveness=Liveness.DEAD), False),
        (lambda f: replace(f, health="degraded"), False),
        (lambda f: replace(f, unschedulable=True), False),
        (lambda f: replace(f, taints=(("dedicated", "gpu", "NoSchedule"),)), False),
    ],
    ids=["liveness-unknown", "labels-unreadable", "unreachable-taint", "not-ready-taint", "unreadable-but-cordoned",
         "unreadable-in-maintenance", "agent-dead", "degraded", "cordoned", "foreign-taint"],
)  # fmt: skip
def test_what_the_operator_cannot_see_keeps_its_replica(nodes: dict[str, dict[str, Any]], change: Any, stays: bool) -> None:
    demand = Demand.of(18 * GB, 2 * GIB, ["bare-metal", "passthrough"], max_load_seconds=30)
    fleet = [change(f) if f.name == "pi5-rtx4090" else f for f in facts(nodes)]
    result = plan(demand, 1, fleet, free_all(nodes), [PodView("a-0", 0, "pi5-rtx4090", ready=True)])
    assert result.deletes == []
    assert result.evictions == []
    assert (result.creates == []) is stays  # no surge for what is only unseen; a surge for a real reason


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda f: replace(f, health="lost"), "GPU of pi5-rtx4090 lost, as its live node agent reports"),
        (lambda f: replace(f, health="lost", liveness=Liveness.UNKNOWN), None),
        (lambda f: replace(f, health="lost", liveness=Liveness.DEAD), None),
    ],
    ids=["lost-by-live-agent", "lost-but-unconfirmed", "lost-but-agent-dead"],
)  # fmt: skip
def test_only_a_live_agent_reporting_a_lost_gpu_deletes_at_once(
    nodes: dict[str, dict[str, Any]], change: Any, why: str | None
) -> None:
    demand = Demand.of(18 * GB, 2 * GIB, ["bare-metal", "passthrough"], max_load_seconds=30)
    fleet = [change(f) if f.name == "pi5-rtx4090" else f for f in facts(nodes)]
    result = plan(demand, 1, fleet, free_all(nodes), [PodView("a-0", 0, "pi5-rtx4090", ready=True)])
    assert result.why.get("a-0") == why
    assert result.deletes == ([] if why is None else ["a-0"])


def test_a_gone_node_deletes_its_replica_at_once(nodes: dict[str, dict[str, Any]]) -> None:
    demand = Demand.of(18 * GB, 2 * GIB, ["bare-metal", "passthrough"], max_load_seconds=30)
    fleet = [f for f in facts(nodes) if f.name != "pi5-rtx4090"]
    result = plan(demand, 1, fleet, free_all(nodes), [PodView("a-0", 0, "pi5-rtx4090", ready=True)])
    assert result.deletes == ["a-0"]
    assert result.why["a-0"] == "node pi5-rtx4090 is gone"


def test_degraded_link_surges_a_replacement_then_removes_the_old_pod(nodes: dict[str, dict[str, Any]]) -> None:
    demand = Demand.of(18 * GB, 2 * GIB, ["bare-metal", "passthrough"], max_load_seconds=30)
    nodes["pi5-rtx4090"]["metadata"]["labels"]["egpu-operator.io/pcie-bandwidth-mbps"] = "400"
    old = PodView("a-0-old", 0, "pi5-rtx4090", ready=True)

    first = plan(demand, 1, facts(nodes), free_all(nodes), [old])
    assert (first.deletes, first.evictions) == ([], [])  # still serving: keep it until the replacement is Ready
    assert [c.node for c in first.creates] == ["vm-h100-passthrough"]

    new = PodView("a-0-new", 0, "vm-h100-passthrough", ready=False)
    waiting = plan(demand, 1, facts(nodes), free_all(nodes), [old, new])
    assert (waiting.creates, waiting.deletes, waiting.evictions) == ([], [], [])

    done = plan(demand, 1, facts(nodes), free_all(nodes), [old, replace(new, ready=True)])
    # Evicted, not deleted: the Eviction API lets a PodDisruptionBudget veto it.
    assert (done.creates, done.deletes, done.evictions) == ([], [], ["a-0-old"])


def test_lost_gpu_replaces_at_once(nodes: dict[str, dict[str, Any]]) -> None:
    demand = Demand.of(18 * GB, 2 * GIB, ["bare-metal", "passthrough"], max_load_seconds=30)
    nodes["pi5-rtx4090"]["metadata"]["labels"]["egpu-operator.io/health"] = "lost"
    result = plan(demand, 1, facts(nodes), free_all(nodes), [PodView("a-0", 0, "pi5-rtx4090", ready=True)])
    assert result.deletes == ["a-0"]
    assert [c.node for c in result.creates] == ["vm-h100-passthrough"]


def test_stranded_replica_keeps_serving_when_nowhere_is_better(nodes: dict[str, dict[str, Any]]) -> None:
    demand = Demand.of(18 * GB, 2 * GIB, ["bare-metal"], max_load_seconds=30)
    nodes["pi5-rtx4090"]["spec"]["unschedulable"] = True
    free = free_all(nodes) | {"switch-4x-a5000": 0}
    result = plan(demand, 1, facts(nodes), free, [PodView("a-0", 0, "pi5-rtx4090", ready=True)])
    assert (result.creates, result.deletes, result.stranded, result.unplaced) == ([], [], 1, 0)


def test_scale_down_removes_the_highest_replicas(nodes: dict[str, dict[str, Any]]) -> None:
    demand = Demand.of(6 * GB, GIB, ["bare-metal"], max_load_seconds=20)
    pods = [PodView(f"a-{i}", i, node, ready=True) for i, node in enumerate(["pi5-rtx4090", "minipc-rtx4070ti", "x220-tesla-p4"])]
    result = plan(demand, 1, facts(nodes), free_all(nodes), pods)
    assert sorted(result.deletes) == ["a-1", "a-2"]
    assert result.creates == []


def test_a_pod_the_scheduler_refused_is_placed_again_elsewhere(nodes: dict[str, dict[str, Any]]) -> None:
    demand = Demand.of(18 * GB, 2 * GIB, ["bare-metal", "passthrough"], max_load_seconds=30)
    refused = PodView("a-0", 0, "vm-h100-passthrough", unschedulable=True)
    # Another deployment's pod got there first; the usage index counts both pods: 1 GPU, 2 pods.
    free = free_all(nodes) | {"vm-h100-passthrough": -1}
    result = plan(demand, 1, facts(nodes), free, [refused])
    assert result.deletes == ["a-0"]
    assert [c.node for c in result.creates] == ["pi5-rtx4090"]


@pytest.mark.parametrize(
    ("taint", "tolerations", "allowed"),
    [
        ({"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}, [], False),
        ({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
         [{"key": "nvidia.com/gpu", "operator": "Exists"}], True),
        ({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
         [{"key": "nvidia.com/gpu", "value": "absent", "effect": "NoSchedule"}], False),
        ({"key": "dedicated", "value": "ai", "effect": "NoExecute"}, [{"operator": "Exists"}], True),
        ({"key": "dedicated", "value": "ai", "effect": "NoExecute"},
         [{"key": "dedicated", "value": "ai", "effect": "NoSchedule"}], False),
        ({"key": "soft", "effect": "PreferNoSchedule"}, [], True),  # only a preference: not a reason to skip
    ],
)  # fmt: skip
def test_taints_are_respected_like_kube_scheduler_does(
    nodes: dict[str, dict[str, Any]], taint: dict[str, str], tolerations: list[dict[str, str]], allowed: bool
) -> None:
    nodes["vm-h100-passthrough"]["spec"]["taints"] = [taint]
    demand = Demand.of(6 * GB, GIB, ["passthrough"], max_load_seconds=20, tolerations=tolerations)
    result = plan(demand, 1, facts(nodes), free_all(nodes), [])
    assert [c.node for c in result.creates] == (["vm-h100-passthrough"] if allowed else [])
    if not allowed:
        assert result.rejections[f"untolerated taint {taint['key']}"] == 1


def test_a_lost_gpu_without_link_labels_reads_as_lost_not_malformed(nodes: dict[str, dict[str, Any]]) -> None:
    labels = nodes["minipc-rtx4070ti"]["metadata"]["labels"]
    for key in ("egpu-operator.io/pcie-gen", "egpu-operator.io/pcie-width", "egpu-operator.io/pcie-bandwidth-mbps"):
        del labels[key]  # what the agent publishes for a single GPU fallen off the bus
    labels["egpu-operator.io/health"] = "lost"
    demand = Demand.of(6 * GB, GIB, ["bare-metal"], max_load_seconds=20)
    result = plan(demand, 1, facts(nodes), free_all(nodes), [PodView("a-0", 0, "minipc-rtx4070ti", ready=True)])
    assert result.rejections["GPU lost"] == 1
    assert result.deletes == ["a-0"]
    assert result.why["a-0"] == "GPU of minipc-rtx4070ti lost, as its live node agent reports"
    assert len(result.creates) == 1


def test_a_time_sliced_gpu_counts_vram_per_physical_gpu(nodes: dict[str, dict[str, Any]]) -> None:
    """One 24 GB RTX 4090 that the device plugin advertises as four GPUs (time-slicing)."""
    pi = replace(next(f for f in facts(nodes) if f.name == "pi5-rtx4090"), gpu_allocatable=4)
    big = Demand.of(18 * GB, 2 * GIB, ["bare-metal"], max_load_seconds=60)
    small = Demand.of(6 * GB, GIB, ["bare-metal"], max_load_seconds=60)

    assert len(plan(big, 4, [pi], {pi.name: 4}, []).creates) == 1  # 20 GB twice does not fit 24 GB
    assert len(plan(small, 4, [pi], {pi.name: 4}, []).creates) == 3  # 3 x 6.6 GB do; a fourth would not
    taken = plan(small, 1, [pi], {pi.name: 3}, [], vram_used={pi.name: 20 * 1024})
    assert (taken.creates, taken.summary) == ([], "0/1 nodes adequate: 1 no free GPU")
    whole = replace(pi, gpu_allocatable=1)
    assert len(plan(small, 1, [whole], {pi.name: 1}, [], vram_used={pi.name: 20 * 1024}).creates) == 1  # not time-sliced
