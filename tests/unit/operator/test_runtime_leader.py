"""The operator's hooks into the leader election: writes fenced until it leads, and the exit on loss."""

import pytest

from egpu_operator.config import OperatorConfig
from egpu_operator.fakekube import FakeKube, FakeLeases
from egpu_operator.leader import LOST_EXIT_CODE, LeaderConfig, NotLeader, State
from egpu_operator.metrics import LEADER
from egpu_operator.runtime import Operator

POD = {"metadata": {"name": "r-0", "namespace": "ns"}}


def test_a_replica_writes_only_while_it_leads_and_exits_when_another_takes_the_lease() -> None:
    leases, kube = FakeLeases(), FakeKube()
    operator = Operator(OperatorConfig(leader=LeaderConfig(identity="pod-a")), kube, watch_client=None, leases=leases)
    exits: list[int] = []
    operator.exit = exits.append
    with pytest.raises(NotLeader):
        operator.kube.create_pod(POD)  # a follower writes nothing
    assert operator.elector is not None
    assert operator.elector.round() is State.LEADER
    assert operator.kube.create_pod(POD)
    leases.put_lease("egpu-system", "egpu-operator", {"holderIdentity": "pod-b", "leaseDurationSeconds": 15})
    assert operator.elector.round() is State.LOST
    assert exits == [LOST_EXIT_CODE]
    assert LEADER._value.get() == 0  # type: ignore[attr-defined]
    with pytest.raises(NotLeader):
        operator.kube.delete_pod("ns", "r-0")
    assert list(kube.pods) == [("ns", "r-0")]


def test_without_an_election_the_operator_acts_alone() -> None:
    kube = FakeKube()
    operator = Operator(OperatorConfig(), kube, watch_client=None)
    assert operator.elector is None
    assert operator.kube is kube
