"""Leader election: the pure decisions by case table, then one replica's elector against the
``FakeLeases`` seam with a clock the test moves (acquire, renew, take over, lose, pause, skew,
release), the cluster claim between two releases, and the write fence."""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from egpu_operator.fakekube import FakeKube, FakeLeases
from egpu_operator.leader import (
    Action,
    Claim,
    Elector,
    Fenced,
    LeaderConfig,
    LeaseRecord,
    NotLeader,
    Observation,
    State,
    decide,
    decide_claim,
    lease_spec,
    observe,
)

ME, OTHER = "operator-a", "operator-b"
HELD = LeaseRecord(holder=OTHER, duration_s=15, renewed="2026-12-04T10:00:00.000000Z", version="7")


@pytest.mark.parametrize(
    ("record", "changed_at", "now", "action"),
    [
        pytest.param(None, 0, 0, Action.CREATE, id="no Lease: create it"),
        pytest.param(LeaseRecord(ME, 15, version="3"), 0, 100, Action.RENEW, id="ours: renew, however old"),
        pytest.param(LeaseRecord("", 1, version="3"), 0, 0, Action.TAKE, id="released: take at once"),
        pytest.param(HELD, 0, 14.9, Action.WAIT, id="held, seen to change 14.9 s ago: wait"),
        pytest.param(HELD, 0, 15.0, Action.TAKE, id="held, unchanged for its duration: take"),
        pytest.param(HELD, 50, 50, Action.WAIT, id="first seen just now: wait, whatever renewTime says"),
    ],
)
def test_decide(record: LeaseRecord | None, changed_at: float, now: float, action: Action) -> None:
    assert decide(Observation(record, changed_at), ME, now).action is action


def test_expiry_is_judged_by_what_the_observer_saw_change_not_by_renew_time() -> None:
    """Clock skew: a renewTime an hour ahead of (or behind) our clock changes nothing; only a Lease
    that stood still for its duration, on our own monotonic clock, is free."""
    for skew in (timedelta(hours=1), timedelta(hours=-1)):
        stamp = (datetime.now(UTC) + skew).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        first = observe(None, LeaseRecord(OTHER, 15, renewed=stamp, version="1"), now=100.0)
        assert decide(first, ME, now=110.0).action is Action.WAIT
        renewed = observe(first, LeaseRecord(OTHER, 15, renewed=stamp + "x", version="2"), now=112.0)
        assert renewed.changed_at == 112.0
        assert decide(renewed, ME, now=126.0).action is Action.WAIT
        unchanged = observe(renewed, renewed.record, now=127.0)
        assert unchanged.changed_at == 112.0
        assert decide(unchanged, ME, now=127.0).action is Action.TAKE


def test_lease_spec_counts_transitions_and_keeps_acquire_time_on_renewal() -> None:
    config = LeaderConfig(identity=ME)
    t0 = datetime(2026, 12, 4, 10, 0, 0, tzinfo=UTC)
    taken = lease_spec(config, HELD, t0)
    assert taken == {
        "holderIdentity": ME,
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-12-04T10:00:00.000000Z",
        "renewTime": "2026-12-04T10:00:00.000000Z",
        "leaseTransitions": 1,
    }
    ours = LeaseRecord(ME, 15, acquired=taken["acquireTime"], transitions=1, version="8")
    renewed = lease_spec(config, ours, t0 + timedelta(seconds=2))
    assert (renewed["acquireTime"], renewed["renewTime"], renewed["leaseTransitions"]) == (
        "2026-12-04T10:00:00.000000Z",
        "2026-12-04T10:00:02.000000Z",
        1,
    )
    released = lease_spec(config, ours, t0, holder="")
    assert (released["holderIdentity"], released["leaseDurationSeconds"]) == ("", 1)


@pytest.mark.parametrize(
    ("claimed", "other", "now", "verdict"),
    [
        pytest.param(None, None, 0, Claim.TAKE, id="no claim: take it"),
        pytest.param("egpu-system/egpu-operator", None, 0, Claim.MINE, id="ours"),
        pytest.param("team-b/egpu-operator", Observation(HELD, 0), 5, Claim.REFUSE, id="another live release: refuse"),
        pytest.param("team-b/egpu-operator", Observation(HELD, 0), 15, Claim.TAKE, id="its Lease stale: take"),
        pytest.param("team-b/egpu-operator", Observation(None, 0), 0, Claim.TAKE, id="its Lease gone: take"),
        pytest.param("team-b/egpu-operator", Observation(LeaseRecord("", 1), 0), 0, Claim.TAKE, id="released: take"),
    ],
)
def test_decide_claim(claimed: str | None, other: Observation | None, now: float, verdict: Claim) -> None:
    assert decide_claim(claimed, "egpu-system/egpu-operator", other, now)[0] is verdict


def test_the_refusal_names_both_releases_and_the_fix() -> None:
    _, reason = decide_claim("team-b/egpu-operator", "egpu-system/egpu-operator", Observation(HELD, 0), 1)
    assert reason == (
        "another egpu-operator acts in this cluster: the release whose Lease is team-b/egpu-operator holds the "
        "cluster claim; this one (egpu-system/egpu-operator) refuses to act. Run one operator per cluster: "
        "uninstall one of the two releases (this one takes over once the other's Lease stops being renewed)"
    )


@pytest.mark.parametrize(("retry", "renew", "duration"), [(2, 2, 15), (2, 15, 15), (0, 10, 15)])
def test_timing_out_of_order_is_refused(retry: float, renew: float, duration: float) -> None:
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        LeaderConfig(retry_period_s=retry, renew_deadline_s=renew, lease_duration_s=duration)


# -- one replica's elector against the fake --------------------------------------------------------


@dataclass
class Replica:
    """One operator replica's elector with a clock the test moves and a record of what it was told."""

    api: FakeLeases
    identity: str
    namespace: str = "egpu-system"
    now: float = 1000.0
    led: int = 0
    lost: list[str] = field(default_factory=list)
    refusals: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        config = LeaderConfig(namespace=self.namespace, identity=self.identity)
        self.elector = Elector(
            config, self.api, self._lead, self.lost.append, self.refusals.append,
            clock=lambda: self.now, wall=lambda: datetime(2026, 12, 4, tzinfo=UTC) + timedelta(seconds=self.now),
        )  # fmt: skip

    def _lead(self) -> None:
        self.led += 1

    def after(self, seconds: float) -> State:
        self.now += seconds
        return self.elector.round()


def test_a_lone_replica_acquires_at_once_and_claims_the_cluster() -> None:
    api = FakeLeases()
    replica = Replica(api, ME)
    assert replica.elector.round() is State.LEADER
    assert (replica.led, api.claim) == (1, "egpu-system/egpu-operator")
    assert api.leases[("egpu-system", "egpu-operator")]["spec"]["holderIdentity"] == ME
    assert api.writes == [("create", "egpu-system/egpu-operator"), ("claim", "egpu-system/egpu-operator")]


def test_the_leader_renews_and_the_follower_waits() -> None:
    api = FakeLeases()
    leader, follower = Replica(api, ME), Replica(api, OTHER)
    leader.elector.round()
    for _ in range(20):  # 40 s: far beyond the duration, but the Lease keeps changing
        assert leader.after(2) is State.LEADER
        follower.now = leader.now
        assert follower.elector.round() is State.FOLLOWER
    assert (leader.led, follower.led, api.leases[("egpu-system", "egpu-operator")]["spec"]["holderIdentity"]) == (1, 0, ME)
    assert api.writes.count(("claim", "egpu-system/egpu-operator")) == 1  # the claim is written once, not per renewal


def test_a_dead_leaders_lease_is_taken_over_after_its_duration() -> None:
    api = FakeLeases()
    leader, follower = Replica(api, ME), Replica(api, OTHER)
    leader.elector.round()
    follower.now = leader.now
    assert follower.elector.round() is State.FOLLOWER
    assert follower.after(14) is State.FOLLOWER  # the leader died (no more renewals): not yet
    assert follower.after(1) is State.LEADER
    spec = api.leases[("egpu-system", "egpu-operator")]["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"], follower.led) == (OTHER, 1, 1)


def test_a_replica_restarted_under_the_same_identity_resumes_its_lease_at_once() -> None:
    api = FakeLeases()
    Replica(api, ME).elector.round()
    assert Replica(api, ME, now=1001.0).elector.round() is State.LEADER  # the pod's container restarted


def test_a_released_lease_is_taken_at_the_next_look() -> None:
    api = FakeLeases()
    leader, follower = Replica(api, ME), Replica(api, OTHER)
    leader.elector.round()
    follower.elector.round()
    leader.elector.release()
    assert leader.elector.state is State.RELEASED
    assert not leader.elector.confirm()
    assert api.leases[("egpu-system", "egpu-operator")]["spec"]["holderIdentity"] == ""
    assert follower.after(0.5) is State.LEADER


def test_leadership_lost_mid_way_is_noticed_before_the_next_write() -> None:
    """Another replica took the Lease while this one was paused (SIGSTOP) past its renew deadline:
    the first write after the pause asks the API server, learns it, and is refused."""
    api, kube = FakeLeases(), FakeKube()
    leader = Replica(api, ME)
    leader.elector.round()
    fenced = Fenced(kube, leader.elector.confirm)
    assert fenced.create_pod({"metadata": {"name": "r-0", "namespace": "ns"}})  # leading: the write passes
    leader.now += 60  # paused: no renewal for a minute
    api.put_lease("egpu-system", "egpu-operator", {"holderIdentity": OTHER, "leaseDurationSeconds": 15})
    with pytest.raises(NotLeader, match="create_pod refused: this replica does not lead"):
        fenced.create_pod({"metadata": {"name": "r-1", "namespace": "ns"}})
    assert (leader.elector.state, list(kube.pods), len(leader.lost)) == (State.LOST, [("ns", "r-0")], 1)
    assert fenced.list_maintenances() == []  # reads still pass


def test_a_paused_leader_nobody_replaced_renews_on_its_next_write() -> None:
    api = FakeLeases()
    leader = Replica(api, ME)
    leader.elector.round()
    leader.now += 60
    assert not leader.elector.holds()
    assert leader.elector.confirm()
    assert leader.elector.state is State.LEADER
    assert leader.lost == []


def test_with_the_api_server_away_the_leader_writes_nothing_past_its_renew_deadline() -> None:
    api = FakeLeases()
    leader, follower = Replica(api, ME), Replica(api, OTHER)
    leader.elector.round()
    api.fail = True
    assert leader.after(8) is State.LEADER
    assert leader.elector.confirm()
    assert leader.after(2) is State.LEADER  # 10 s without a renewal: still the leader, but fenced
    assert not leader.elector.confirm()
    api.fail = False  # back, and nobody took over: it renews and writes again
    assert leader.elector.confirm()
    leader.now += 30  # the leader's node is cut off; the follower still reaches the API server
    follower.now = leader.now
    assert follower.elector.round() is State.FOLLOWER
    assert follower.after(15) is State.LEADER
    leader.now = follower.now
    assert not leader.elector.confirm()
    assert leader.lost == ["another replica holds the Lease egpu-system/egpu-operator"]


def test_a_second_release_refuses_while_the_first_lives_and_takes_over_once_it_is_gone() -> None:
    api = FakeLeases()
    first, second = Replica(api, ME), Replica(api, OTHER, namespace="team-b")
    first.elector.round()
    second.now = first.now
    assert second.elector.round() is State.REFUSING
    assert second.refusals[-1] is not None
    assert "egpu-system/egpu-operator holds the cluster claim" in second.refusals[-1]
    for _ in range(10):  # the first keeps renewing: the second keeps refusing, and says so once
        first.after(2)
        second.now = first.now
        assert second.elector.round() is State.REFUSING
    assert (len(second.refusals), second.led, api.claim) == (1, 0, "egpu-system/egpu-operator")
    assert second.after(15) is State.LEADER  # the first release's Lease stood still for its duration
    assert (api.claim, second.refusals[-1], second.led) == ("team-b/egpu-operator", None, 1)
    assert first.after(0) is State.LOST  # the first, back from a pause, learns it may no longer act


def test_a_second_release_that_may_not_read_the_claiming_lease_refuses_and_says_how_to_end_it() -> None:
    """Unreadable is not gone: the chart lets a release read only Leases of its own name elsewhere."""
    api = FakeLeases()
    first, second = Replica(api, ME), Replica(api, OTHER, namespace="team-b")
    first.elector.round()
    api.forbidden.add("egpu-system")
    second.now = first.now + 60  # long past the first Lease's duration, were it readable
    assert second.elector.round() is State.REFUSING
    assert (api.claim, second.led) == ("egpu-system/egpu-operator", 0)
    refusal = second.refusals[-1]
    assert refusal is not None
    assert "the cluster claim names the Lease egpu-system/egpu-operator, which this release (team-b/egpu-operator)" in refusal
    assert "kubectl annotate crd inferencedeployments.egpu-operator.io egpu-operator.io/operator-lease-" in refusal


def test_without_the_crd_a_new_leader_waits_and_a_leader_carries_on() -> None:
    api = FakeLeases()
    api.crd_installed = False
    waiting = Replica(api, ME)
    assert waiting.elector.round() is State.REFUSING
    api.crd_installed = True
    assert waiting.after(2) is State.LEADER
    api.crd_installed, api.claim = False, None
    assert waiting.after(2) is State.LEADER
    api.crd_installed = True  # reinstalled: no annotation; the leader claims it again
    assert waiting.after(2) is State.LEADER
    assert api.claim == "egpu-system/egpu-operator"
