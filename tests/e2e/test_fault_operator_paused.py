"""The operator paused (SIGSTOP) for 60 s, as a stalled VM or a debugger would pause it, then
resumed: every Lease it last saw is a minute old, yet no replica is deleted or re-placed.
Before the fix all 12 replicas were deleted and placed again."""

import signal

import pytest

from egpu_localcluster.kubectl import Kubectl
from tests.e2e.conftest import OperatorProcess
from tests.e2e.faults import assert_nothing_lost, survive

pytestmark = pytest.mark.e2e


def test_operator_paused_for_60_s_loses_no_replica(kube: Kubectl, workspace: str, operator: OperatorProcess) -> None:
    try:
        ledger = survive(
            kube, workspace, "operator paused for 60 s",
            inject=lambda: operator.signal(signal.SIGSTOP),
            recover=lambda: operator.signal(signal.SIGCONT),
            length_s=60,
        )  # fmt: skip
    finally:
        operator.signal(signal.SIGCONT)
    assert_nothing_lost(ledger)
