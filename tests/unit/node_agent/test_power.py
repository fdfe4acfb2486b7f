"""Power planning: clamping, drift, restoring defaults, unsupported GPUs, limits someone else set. Case
tables over pure code."""

from dataclasses import replace

import pytest

from egpu_api.power import (
    EXTERNALLY_MANAGED,
    PowerContractError,
    PowerLimitStatus,
    dump_status,
    parse_request,
    parse_status,
)
from egpu_node_agent.power import PowerAction, plan_power, plan_restore
from egpu_node_agent.readings import GpuReading, PowerReading

A5000 = PowerReading(limit_watts=230, default_limit_watts=230, min_limit_watts=100, max_limit_watts=230)


def gpu(uuid: str, power: PowerReading | None = A5000, health: str = "ok") -> GpuReading:
    return GpuReading(index=0, uuid=uuid, product="NVIDIA RTX A5000", pci_bus_id="0000:01:00.0", memory_mib=24564,
                      power=power, health=health)  # type: ignore[arg-type]  # fmt: skip


def applied(target: int, current: int, requested: int | None = None, **extra: object) -> PowerLimitStatus:
    return PowerLimitStatus(
        requested_watts=target if requested is None else requested, target_watts=target, applied_watts=current, **extra
    )


@pytest.mark.parametrize(
    ("request_", "previous", "readings", "actions", "status"),
    [
        pytest.param({"GPU-a": 180}, {}, [gpu("GPU-a")], [PowerAction("GPU-a", 180, "request")],
                     {"GPU-a": applied(180, 230)}, id="apply"),
        pytest.param({"GPU-a": 180}, {"GPU-a": applied(180, 180)}, [gpu("GPU-a", replace(A5000, limit_watts=180))], [],
                     {"GPU-a": applied(180, 180, set_by_agent_watts=180)}, id="steady: nothing to do"),
        pytest.param({"GPU-a": 500}, {}, [gpu("GPU-a")], [],
                     {"GPU-a": applied(230, 230, requested=500, clamped=True)}, id="clamped to max, already there"),
        pytest.param({"GPU-a": 50}, {}, [gpu("GPU-a")], [PowerAction("GPU-a", 100, "request")],
                     {"GPU-a": applied(100, 230, requested=50, clamped=True)}, id="clamped to min"),
        pytest.param({"GPU-a": 180}, {"GPU-a": applied(180, 180)}, [gpu("GPU-a")], [PowerAction("GPU-a", 180, "drift")],
                     {"GPU-a": applied(180, 230)}, id="driver reload reset it: re-apply"),
        pytest.param({}, {"GPU-a": applied(180, 180)}, [gpu("GPU-a", replace(A5000, limit_watts=180))],
                     [PowerAction("GPU-a", 230, "restore default")],
                     {"GPU-a": PowerLimitStatus(requested_watts=None, target_watts=230, applied_watts=180,
                                                set_by_agent_watts=180)},
                     id="request removed: restore default"),
        pytest.param({}, {"GPU-a": applied(180, 180)}, [gpu("GPU-a")], [], {}, id="removed and already default: forget"),
        pytest.param({"GPU-a": 180}, {}, [gpu("GPU-a", power=None)], [],
                     {"GPU-a": PowerLimitStatus(requested_watts=180, target_watts=None, applied_watts=None,
                                                error="NVML cannot read or set this GPU's power limit (vGPU guest?)")},
                     id="vGPU guest: unsupported"),
        pytest.param({"GPU-x": 180}, {}, [gpu("GPU-a")], [],
                     {"GPU-x": PowerLimitStatus(requested_watts=180, target_watts=None, applied_watts=None,
                                                error="no healthy GPU with this uuid here")}, id="unknown uuid"),
        pytest.param({"GPU-a": 180}, {}, [gpu("GPU-a", health="lost")], [],
                     {"GPU-a": PowerLimitStatus(requested_watts=180, target_watts=None, applied_watts=None,
                                                error="no healthy GPU with this uuid here")}, id="lost GPU"),
    ],
)  # fmt: skip
def test_plan_power(
    request_: dict[str, int],
    previous: dict[str, PowerLimitStatus],
    readings: list[GpuReading],
    actions: list[PowerAction],
    status: dict[str, PowerLimitStatus],
) -> None:
    plan = plan_power(request_, previous, readings, read_only=False)
    assert (plan.actions, plan.status) == (actions, status)


def test_read_only_plans_the_same_actions_and_marks_the_status_as_a_dry_run() -> None:
    plan = plan_power({"GPU-a": 180}, {}, [gpu("GPU-a")], read_only=True)
    assert plan.actions == [PowerAction("GPU-a", 180, "request")]
    assert plan.status["GPU-a"].dry_run


def ours(target: int, current: int, requested: int | None = None, **extra: object) -> PowerLimitStatus:
    """A status the agent wrote after setting ``target`` itself."""
    return applied(target, current, requested, set_by_agent_watts=target, **extra)


def external(target: int, current: int, requested: int | None = None) -> PowerLimitStatus:
    return applied(target, current, requested, state=EXTERNALLY_MANAGED, set_by_agent_watts=None)


AT_200, AT_180 = replace(A5000, limit_watts=200), replace(A5000, limit_watts=180)


@pytest.mark.parametrize(
    ("request_", "previous", "reading", "actions", "state", "owned"),
    [
        pytest.param({"GPU-a": 180}, {"GPU-a": ours(180, 180)}, AT_200, [], EXTERNALLY_MANAGED, None,
                     id="nvidia-smi -pl 200 under the agent's 180: hand over, set nothing"),
        pytest.param({"GPU-a": 180}, {"GPU-a": ours(180, 180)}, A5000, [PowerAction("GPU-a", 180, "drift")], "Managed",
                     None, id="back at the default is a driver reload: re-apply"),
        pytest.param({"GPU-a": 180}, {"GPU-a": external(180, 200)}, AT_200, [], EXTERNALLY_MANAGED, None,
                     id="still someone else's: leave it"),
        pytest.param({"GPU-a": 180}, {"GPU-a": external(180, 200)}, A5000, [], EXTERNALLY_MANAGED, None,
                     id="someone else's and then reset to default: still theirs"),
        pytest.param({"GPU-a": 180}, {"GPU-a": external(180, 200)}, AT_180, [], "Managed", None,
                     id="the limit came back to the target: managed again, but not set by the agent"),
        pytest.param({"GPU-a": 150}, {"GPU-a": external(180, 200)}, AT_200, [PowerAction("GPU-a", 150, "request")],
                     "Managed", None, id="a new request takes the GPU back"),
        pytest.param({"GPU-a": 150}, {"GPU-a": ours(180, 180)}, AT_200, [PowerAction("GPU-a", 150, "request")],
                     "Managed", None, id="a new request in the same poll as a foreign limit: the request wins"),
        pytest.param({"GPU-a": 180}, {}, AT_200, [PowerAction("GPU-a", 180, "request")], "Managed", None,
                     id="a foreign limit before the first request: the operator asked, the agent applies once"),
        pytest.param({"GPU-a": 180}, {"GPU-a": ours(180, 230, error="refused")}, AT_200,
                     [PowerAction("GPU-a", 180, "request")], "Managed", None,
                     id="the agent's limit was never in force (refused): retry, nothing to hand over"),
        pytest.param({"GPU-a": 500}, {"GPU-a": applied(230, 230, requested=500, clamped=True,
                                                       set_by_agent_watts=None)},
                     AT_200, [], EXTERNALLY_MANAGED, None,
                     id="target is the default, observed there, then moved: someone else's"),
        pytest.param({"GPU-a": 180}, {"GPU-a": ours(180, 180)}, AT_180, [], "Managed", 180,
                     id="steady: the agent still owns what it set"),
        pytest.param({"GPU-a": 180}, {"GPU-a": applied(180, 180)}, AT_180, [], "Managed", 180,
                     id="status from an agent before setByAgentWatts: an applied target was the agent's"),
    ],
)  # fmt: skip
def test_a_limit_someone_else_set_is_left_alone_until_the_request_changes_or_it_returns(
    request_: dict[str, int],
    previous: dict[str, PowerLimitStatus],
    reading: PowerReading,
    actions: list[PowerAction],
    state: str,
    owned: int | None,
) -> None:
    plan = plan_power(request_, previous, [gpu("GPU-a", reading)], read_only=False)
    assert plan.actions == actions
    assert plan.status["GPU-a"].state == state
    assert plan.status["GPU-a"].set_by_agent_watts == owned
    assert plan.status["GPU-a"].applied_watts == reading.limit_watts


def test_the_hand_over_message_names_the_observed_and_the_expected_watts_and_the_fix() -> None:
    plan = plan_power({"GPU-a": 180}, {"GPU-a": ours(180, 180)}, [gpu("GPU-a", AT_200)], read_only=False)
    message = plan.status["GPU-a"].message or ""
    assert "NVML enforces 200 W, not the 180 W the agent set" in message
    assert "set it to 180 W again or change the deployment's spec.power" in message


def test_a_read_only_agent_never_hands_over() -> None:
    previous = {"GPU-a": applied(180, 230, dry_run=True, set_by_agent_watts=None)}
    plan = plan_power({"GPU-a": 180}, previous, [gpu("GPU-a", AT_200)], read_only=True)
    assert plan.status["GPU-a"].state == "Managed"
    assert plan.status["GPU-a"].dry_run


@pytest.mark.parametrize(
    ("previous", "readings", "actions", "left"),
    [
        pytest.param({"GPU-a": ours(180, 180)}, [gpu("GPU-a", AT_180)], [PowerAction("GPU-a", 230, "restore default")],
                     {}, id="the agent's own limit: back to the default"),
        pytest.param({"GPU-a": ours(180, 180)}, [gpu("GPU-a", AT_200)], [],
                     {"GPU-a": "left at 200 W (default 230 W): someone else set that limit, so it is theirs to change"},
                     id="moved by someone else since: left"),
        pytest.param({"GPU-a": external(180, 200)}, [gpu("GPU-a", AT_200)], [],
                     {"GPU-a": "left at 200 W (default 230 W): someone else set that limit, so it is theirs to change"},
                     id="externally managed: left"),
        pytest.param({"GPU-a": applied(180, 180, set_by_agent_watts=None)}, [gpu("GPU-a", AT_180)], [],
                     {"GPU-a": "left at 180 W (default 230 W): someone else set that limit, so it is theirs to change"},
                     id="at the target but never set by the agent: left"),
        pytest.param({"GPU-a": ours(180, 180)}, [gpu("GPU-a")], [], {}, id="already at the default: nothing"),
        pytest.param({"GPU-a": ours(180, 180)}, [gpu("GPU-a", AT_180, health="lost")], [],
                     {"GPU-a": "its power limit cannot be read now (GPU lost or unsupported); nothing restored"},
                     id="lost GPU: said, not guessed"),
        pytest.param({}, [gpu("GPU-a", AT_180)], [], {}, id="nothing the agent managed: nothing to say"),
    ],
)  # fmt: skip
def test_restore_puts_back_only_the_limits_the_agent_set(
    previous: dict[str, PowerLimitStatus], readings: list[GpuReading], actions: list[PowerAction], left: dict[str, str]
) -> None:
    plan = plan_restore(previous, readings, previous)
    assert (plan.actions, plan.left) == (actions, left)


def test_a_dropped_request_on_a_limit_someone_else_set_is_left_and_said() -> None:
    plan = plan_power({}, {"GPU-a": external(180, 200)}, [gpu("GPU-a", AT_200)], read_only=False)
    assert plan.actions == []
    assert plan.status == {}
    assert "left at 200 W" in plan.left["GPU-a"]


@pytest.mark.parametrize("text", ['{"GPU-a": -5}', '{"GPU-a": "lots"}', "[180]", "not json"])
def test_malformed_requests_name_the_annotation_and_the_fix(text: str) -> None:
    with pytest.raises(PowerContractError, match=r'power-limit-request must be JSON like \{"GPU-<uuid>": 200\}'):
        parse_request(text)


def test_status_round_trips_through_its_annotation() -> None:
    status = {"GPU-a": applied(180, 180, clamped=False, dry_run=True)}
    assert parse_status(dump_status(status)) == status
    assert '"appliedWatts":180' in dump_status(status)


def test_ownership_and_state_round_trip_through_the_annotation() -> None:
    status = {"GPU-a": ours(180, 180), "GPU-b": external(180, 200)}
    text = dump_status(status)
    assert '"setByAgentWatts":180' in text
    assert '"state":"ExternallyManaged"' in text
    assert {uuid: entry.owned_watts() for uuid, entry in parse_status(text).items()} == {"GPU-a": 180, "GPU-b": None}
