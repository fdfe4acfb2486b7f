"""The supervisor around kopf: what it decides from the CRDs it sees, and that a stop ends in time."""

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from egpu_operator import supervisor
from egpu_operator.supervisor import Action, CrdPresence, KopfCore, Supervisor, decide, missing

IDEP, GM = supervisor.REQUIRED_CRDS
BOTH = {IDEP: "uid-1", GM: "uid-2"}


def test_the_required_crds_are_the_operators_two() -> None:
    assert supervisor.REQUIRED_CRDS == ("inferencedeployments.egpu-operator.io", "gpumaintenances.egpu-operator.io")


@pytest.mark.parametrize(
    ("installed", "expected"),
    [
        (BOTH, None),
        (
            {IDEP: None, GM: "uid-2"},
            "CRD inferencedeployments.egpu-operator.io not installed: the operator waits for it "
            "(install the chart's CRDs, or kubectl apply -f crds/ from the release)",
        ),
        ({IDEP: None, GM: None}, "CRD inferencedeployments.egpu-operator.io, gpumaintenances.egpu-operator.io not installed"),
        ({}, "waiting for the first read of CRD inferencedeployments.egpu-operator.io, gpumaintenances.egpu-operator.io"),
    ],
)
def test_missing_names_every_crd_not_installed(installed: dict[str, str | None], expected: str | None) -> None:
    problem = missing(installed)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None
        assert problem.startswith(expected)


@pytest.mark.parametrize(
    ("stop", "alive", "started_with", "installed", "action"),
    [
        (True, True, BOTH, BOTH, Action.STOP),
        (True, False, None, {}, Action.STOP),
        (False, False, None, {}, Action.WAIT),  # nothing read yet
        (False, False, None, {IDEP: None, GM: "uid-2"}, Action.WAIT),  # a CRD missing: no core
        (False, False, None, BOTH, Action.START),
        (False, True, BOTH, BOTH, Action.WAIT),
        (False, True, BOTH, {IDEP: None, GM: "uid-2"}, Action.RESTART),  # deleted under the core
        (False, True, BOTH, {IDEP: "uid-3", GM: "uid-2"}, Action.RESTART),  # reinstalled between two reads
        (False, False, BOTH, {IDEP: None, GM: "uid-2"}, Action.RESTART),  # kopf died of the 404 first
        (False, False, BOTH, BOTH, Action.FAIL),  # died with every CRD in place
    ],
)
def test_decide(
    stop: bool, alive: bool, started_with: dict[str, str | None] | None, installed: dict[str, str | None], action: Action
) -> None:
    assert decide(stop, alive, started_with, installed) is action


class FakeCrds:
    def __init__(self, uids: dict[str, str | None]) -> None:
        self.uids = dict(uids)
        self.failing = False

    def crd_uid(self, name: str) -> str | None:
        if self.failing:
            raise ConnectionError("API server away")
        return self.uids[name]


def test_presence_keeps_the_last_uid_when_the_api_server_cannot_say() -> None:
    crds = FakeCrds(BOTH)
    presence = CrdPresence(crds)
    assert presence.refresh() == BOTH
    crds.failing = True
    assert presence.refresh() == BOTH, "unknown is not gone: an outage must not restart the core"
    crds.failing, crds.uids[IDEP] = False, None
    assert presence.refresh() == {IDEP: None, GM: "uid-2"}


class FakeOperator:
    def health_problem(self) -> str | None:
        return None

    def readiness_problem(self) -> str | None:
        return "waiting for kopf's indexes"


class FakeCore:
    def __init__(self, stops: bool = True) -> None:
        self.operator = FakeOperator()
        self.started = self.stopped = False
        self.dies = False
        self._stops = stops

    @property
    def alive(self) -> bool:
        return self.started and not self.stopped and not self.dies

    def start(self) -> None:
        self.started = True

    def stop(self, grace_s: float) -> bool:
        self.stopped = self._stops
        return self._stops


def _running(crds: FakeCrds, cores: list[FakeCore]) -> tuple[Supervisor, CrdPresence, list[int]]:
    presence = CrdPresence(crds)
    made = iter(cores)
    watched = Supervisor(presence, lambda: next(made), grace_s=0.1)
    codes: list[int] = []
    threading.Thread(target=lambda: codes.append(watched.run()), daemon=True).start()
    return watched, presence, codes


def _until(probe: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + 10
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_crd_reinstalled_restarts_the_core_and_readyz_names_it_meanwhile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "POLL_S", 0.01)
    crds, first, second = FakeCrds(BOTH), FakeCore(), FakeCore()
    watched, presence, codes = _running(crds, [first, second])
    _until(lambda: first.started, "the first core")
    assert watched.readiness_problem() == "waiting for kopf's indexes"

    crds.uids[IDEP] = None
    _until(lambda: first.stopped, "the first core stopped")
    _until(lambda: (watched.readiness_problem() or "").startswith(f"CRD {IDEP} not installed"), "/readyz naming the CRD")
    assert watched.health_problem() is None, "a missing CRD is not a reason to restart the pod"
    assert not second.started, "no core runs while a CRD is missing"

    crds.uids[IDEP] = "uid-3"
    _until(lambda: second.started, "a fresh core once the CRD is back")
    watched.request_stop()
    _until(lambda: codes, "the supervisor to return")
    assert codes == [0]
    assert second.stopped
    presence.stop()


def test_a_core_that_dies_with_every_crd_in_place_ends_the_process_non_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "POLL_S", 0.01)
    core = FakeCore()
    _, _, codes = _running(FakeCrds(BOTH), [core])
    _until(lambda: core.started, "the core")
    core.dies = True
    _until(lambda: codes, "the supervisor to return")
    assert codes == [supervisor.FAILED_EXIT_CODE]


def test_a_core_stuck_on_a_restart_ends_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "POLL_S", 0.01)
    crds, core = FakeCrds(BOTH), FakeCore(stops=False)
    _, _, codes = _running(crds, [core])
    _until(lambda: core.started, "the core")
    crds.uids[GM] = None
    _until(lambda: codes, "the supervisor to return")
    assert codes == [supervisor.STUCK_EXIT_CODE]


def test_a_stop_request_ends_with_0_even_when_the_core_is_stuck(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "POLL_S", 0.01)
    core = FakeCore(stops=False)
    watched, _, codes = _running(FakeCrds(BOTH), [core])
    _until(lambda: core.started, "the core")
    watched.request_stop()
    _until(lambda: codes, "the supervisor to return")
    assert codes == [0]


def test_kopf_core_stops_its_loop_through_the_stop_flag() -> None:
    ended: list[str] = []

    def run(loop: asyncio.AbstractEventLoop, stop: "asyncio.Future[None]") -> None:
        loop.run_until_complete(stop)
        ended.append("stopped")

    core = KopfCore(FakeOperator(), run)
    core.start()
    assert core.alive
    assert core.stop(grace_s=5)
    assert ended == ["stopped"]
    assert not core.alive


def test_kopf_core_stuck_outside_its_loop_is_reported_after_the_grace_period() -> None:
    release = threading.Event()
    core = KopfCore(FakeOperator(), lambda loop, stop: release.wait())
    core.start()
    assert not core.stop(grace_s=0.1), "a core blocked past the grace period must be reported as stuck"
    release.set()
