"""Power planning: clamping, drift, restoring defaults, unsupported GPUs. Case tables over pure code."""

from dataclasses import replace

import pytest

from egpu_api.power import PowerContractError, PowerLimitStatus, dump_status, parse_request, parse_status
from egpu_node_agent.power import PowerAction, plan_power
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
                     {"GPU-a": applied(180, 180)}, id="steady: nothing to do"),
        pytest.param({"GPU-a": 500}, {}, [gpu("GPU-a")], [],
                     {"GPU-a": applied(230, 230, requested=500, clamped=True)}, id="clamped to max, already there"),
        pytest.param({"GPU-a": 50}, {}, [gpu("GPU-a")], [PowerAction("GPU-a", 100, "request")],
                     {"GPU-a": applied(100, 230, requested=50, clamped=True)}, id="clamped to min"),
        pytest.param({"GPU-a": 180}, {"GPU-a": applied(180, 180)}, [gpu("GPU-a")], [PowerAction("GPU-a", 180, "drift")],
                     {"GPU-a": applied(180, 230)}, id="driver reload reset it: re-apply"),
        pytest.param({}, {"GPU-a": applied(180, 180)}, [gpu("GPU-a", replace(A5000, limit_watts=180))],
                     [PowerAction("GPU-a", 230, "restore default")],
                     {"GPU-a": PowerLimitStatus(requested_watts=None, target_watts=230, applied_watts=180)},
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
    assert plan_power(request_, previous, readings, read_only=False) == (actions, status)


def test_read_only_plans_the_same_actions_and_marks_the_status_as_a_dry_run() -> None:
    actions, status = plan_power({"GPU-a": 180}, {}, [gpu("GPU-a")], read_only=True)
    assert actions == [PowerAction("GPU-a", 180, "request")]
    assert status["GPU-a"].dry_run


@pytest.mark.parametrize("text", ['{"GPU-a": -5}', '{"GPU-a": "lots"}', "[180]", "not json"])
def test_malformed_requests_name_the_annotation_and_the_fix(text: str) -> None:
    with pytest.raises(PowerContractError, match=r'power-limit-request must be JSON like \{"GPU-<uuid>": 200\}'):
        parse_request(text)


def test_status_round_trips_through_its_annotation() -> None:
    status = {"GPU-a": applied(180, 180, clamped=False, dry_run=True)}
    assert parse_status(dump_status(status)) == status
    assert '"appliedWatts":180' in dump_status(status)
