"""Agent liveness from observed Lease renewals: blindness is not death."""

from datetime import UTC, datetime, timedelta

import pytest

from egpu_operator.liveness import Heartbeats, Liveness, LivenessConfig, Visibility

CONFIG = LivenessConfig(lease_ttl_s=40, grace_s=20, probe_interval_s=2, blind_after_s=6, disruption_fraction=0.55)
WALL = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
NODES = [f"n{i}" for i in range(8)]


class World:
    """An operator's clock, its sight of the API server, and agents renewing every 10 s."""

    def __init__(self) -> None:
        self.now = 0.0
        self.visibility = Visibility(CONFIG, self.now)
        self.beats = Heartbeats(CONFIG)
        self.renewed = dict.fromkeys(NODES, WALL)
        self.wall = WALL

    def run(self, seconds: float, agents: set[str] | None = None, api: bool = True, operator: bool = True) -> None:
        """Advance one second at a time: agents renew if the API answers; the operator sees if it runs."""
        if agents is None:
            agents = set(NODES)
        for _ in range(int(seconds)):
            self.now += 1
            self.wall += timedelta(seconds=1)
            if api and int(self.now) % 10 == 0:
                for node in agents:
                    self.renewed[node] = self.wall
            if api and operator:
                self.visibility.probe_succeeded(self.now)
                for node in NODES:
                    self.beats.observe(node, self.renewed[node], self.now)

    def verdicts(self) -> dict[str, Liveness]:
        return dict(self.beats.judge(NODES, self.visibility, self.now, self.wall).by_node)


def test_renewing_agents_are_alive() -> None:
    world = World()
    world.run(300)
    assert set(world.verdicts().values()) == {Liveness.ALIVE}


def test_one_stopped_agent_is_dead_only_after_ttl_and_grace_of_clear_sight() -> None:
    world = World()
    world.run(100)
    others = set(NODES) - {"n0"}
    world.run(45, agents=others)
    assert world.verdicts()["n0"] is Liveness.UNKNOWN  # stale, but not for TTL + grace yet
    world.run(30, agents=others)
    assert world.verdicts()["n0"] is Liveness.DEAD
    assert {world.verdicts()[n] for n in others} == {Liveness.ALIVE}


@pytest.mark.parametrize(
    "blind",
    [{"api": False}, {"operator": False}],
    ids=["api-server-down-60s", "operator-paused-60s"],
)
def test_after_a_blind_minute_nothing_is_dead(blind: dict[str, bool]) -> None:
    world = World()
    world.run(100)
    world.run(60, **blind)
    assert Liveness.DEAD not in world.verdicts().values()  # nothing renewed, yet nothing is judged dead
    world.run(1)
    assert Liveness.DEAD not in world.verdicts().values()
    world.run(15)
    assert set(world.verdicts().values()) == {Liveness.ALIVE}  # every agent renewed once the API was back


def test_blindness_is_judged_at_the_moment_of_judging() -> None:
    """A paused operator judges before its probe has run again: the last good probe is too old."""
    world = World()
    world.run(100)
    world.now += 120
    world.wall += timedelta(seconds=120)
    assert set(world.verdicts().values()) == {Liveness.UNKNOWN}


def test_most_of_the_fleet_dead_at_once_is_a_disruption() -> None:
    world = World()
    world.run(100)
    world.run(120, agents={"n0", "n1"})  # six of eight agents silent
    verdicts = world.beats.judge(NODES, world.visibility, world.now, world.wall)
    assert verdicts.disruption
    assert verdicts.dead_seen == 6
    assert Liveness.DEAD not in verdicts.by_node.values()
    world.run(120, agents={"n0", "n1", "n2", "n3", "n4"})  # three of eight: below the fraction
    verdicts = world.beats.judge(NODES, world.visibility, world.now, world.wall)
    assert not verdicts.disruption
    assert {n for n, v in verdicts.by_node.items() if v is Liveness.DEAD} == {"n5", "n6", "n7"}


def test_a_watch_gap_restarts_the_clear_sight_window() -> None:
    world = World()
    world.run(100)
    world.run(50, agents=set(NODES) - {"n0"})
    world.visibility.gap(world.now)
    world.run(30, agents=set(NODES) - {"n0"})
    assert world.verdicts()["n0"] is Liveness.UNKNOWN
    world.run(40, agents=set(NODES) - {"n0"})
    assert world.verdicts()["n0"] is Liveness.DEAD


def test_a_skewed_agent_clock_is_alive_while_its_lease_keeps_changing() -> None:
    """Edge hosts without a real-time clock: renewTime an hour behind, but it moves."""
    world = World()
    world.run(100)
    for step in range(12):
        world.run(10)
        world.beats.observe("n0", WALL - timedelta(hours=1, seconds=-step), world.now)
    assert world.verdicts()["n0"] is Liveness.ALIVE


def test_a_node_first_seen_without_a_lease_gets_the_grace_too() -> None:
    world = World()
    world.run(100)
    assert world.beats.judge([*NODES, "new"], world.visibility, world.now, world.wall)["new"] is Liveness.UNKNOWN
    world.run(61)
    assert world.beats.judge([*NODES, "new"], world.visibility, world.now, world.wall)["new"] is Liveness.DEAD
    alone = world.beats.judge(["new"], world.visibility, world.now, world.wall)
    assert alone["new"] is Liveness.UNKNOWN
    assert alone.disruption


@pytest.mark.parametrize(
    "fields",
    [
        {"lease_ttl_s": 0},
        {"grace_s": -1},
        {"disruption_fraction": 0},
        {"disruption_fraction": 1.5},
        {"blind_after_s": 3},
        {"rollout_grace_s": -1},
    ],
)
def test_bad_thresholds_are_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        LivenessConfig(**fields)


ROLLOUT = LivenessConfig(lease_ttl_s=40, grace_s=20, probe_interval_s=2, blind_after_s=6, rollout_grace_s=300)


def judge_n0(world: World, restarts: dict[str, str] | None) -> tuple[Liveness, dict[str, str]]:
    verdicts = world.beats.judge(NODES, world.visibility, world.now, world.wall, restarts)
    return verdicts["n0"], dict(verdicts.restarting)


@pytest.mark.parametrize(
    ("silent_s", "restarts", "expected", "held"),
    [
        (45, {"n0": "agent pod a is starting"}, Liveness.UNKNOWN, {}),  # within TTL + grace: unknown anyway
        (70, None, Liveness.DEAD, {}),  # silent past TTL + grace, no sign of a restart: dead as before
        (70, {"n0": "agent pod a is starting"}, Liveness.UNKNOWN, {"n0": "agent pod a is starting"}),
        (350, {"n0": "agent pod a is starting"}, Liveness.UNKNOWN, {"n0": "agent pod a is starting"}),
        (370, {"n0": "agent pod a is starting"}, Liveness.DEAD, {}),  # past TTL + grace + rollout grace: dead
        (70, {"n1": "agent pod b is starting"}, Liveness.DEAD, {}),  # another node's restart is not n0's
    ],
    ids=["before-horizon", "no-restart", "restarting", "restarting-near-bound", "restart-past-bound", "other-node"],
)
def test_a_restarting_agent_is_unknown_for_a_bounded_time(
    silent_s: int, restarts: dict[str, str] | None, expected: Liveness, held: dict[str, str]
) -> None:
    world = World()
    world.beats = Heartbeats(ROLLOUT)
    world.run(100)
    world.run(silent_s, agents=set(NODES) - {"n0"})
    assert judge_n0(world, restarts) == (expected, held)


def test_a_restart_needs_clear_sight_too() -> None:
    """Blind, a restarting node is unknown and not reported as held back: nothing was held."""
    world = World()
    world.beats = Heartbeats(ROLLOUT)
    world.run(100)
    world.run(70, agents=set(NODES) - {"n0"}, operator=False)
    assert judge_n0(world, {"n0": "agent pod a is starting"}) == (Liveness.UNKNOWN, {})


def test_a_zero_rollout_grace_turns_the_rule_off() -> None:
    world = World()
    world.beats = Heartbeats(LivenessConfig(rollout_grace_s=0))
    world.run(100)
    world.run(70, agents=set(NODES) - {"n0"})
    assert judge_n0(world, {"n0": "agent pod a is starting"}) == (Liveness.DEAD, {})
