"""Two replicas, one leader, on the local control plane: two operator processes share one leader
Lease and only its holder writes; the leader SIGKILLed during a placement burst is replaced by
the follower, and no replica pod is created twice (pod ledger); an operator of a second release
(its Lease in another namespace) reports the conflict and writes nothing."""

import re
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from egpu_localcluster.kubectl import Kubectl
from egpu_localcluster.ledger import PodLedger
from egpu_localcluster.readywatch import ReadyWatch
from tests.e2e import maintenances as gm
from tests.e2e.conftest import OperatorProcess
from tests.e2e.deployments import apply, deployment, ready_on, replica_pods
from tests.e2e.helpers import NAMESPACE, wait_for

pytestmark = pytest.mark.e2e

#: Short leases, so a takeover after SIGKILL takes seconds: duration 4 s, renewal every second.
SHORT_LEASES = {
    "EGPU_OPERATOR_RESYNC_SECONDS": "3",
    "EGPU_OPERATOR_LEADER_LEASE_DURATION_SECONDS": "4",
    "EGPU_OPERATOR_LEADER_RENEW_DEADLINE_SECONDS": "3",
    "EGPU_OPERATOR_LEADER_RETRY_PERIOD_SECONDS": "1",
}
WRITE_VERBS = ("create", "patch", "update", "delete", "evict")
MODES = ("bare-metal", "passthrough", "vgpu")


def gauge(process: OperatorProcess, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", process.metrics(), re.MULTILINE)
    return float(found.group(1)) if found else -1.0


def writes(process: OperatorProcess) -> float:
    """Requests that change something, as the operator counted them (the leader election's own aside)."""
    pattern = rf'^egpu_operator_api_requests_total{{verb="({"|".join(WRITE_VERBS)})"}} (\S+)$'
    return sum(float(value) for _, value in re.findall(pattern, process.metrics(), re.MULTILINE))


@contextmanager
def session_operator_stopped(operator: OperatorProcess) -> Iterator[None]:
    """The suite's operator stops (handing its Lease back) and starts again afterwards."""
    operator.stop()
    try:
        yield
    finally:
        operator.start()


def leader_env(identity: str, namespace: str) -> dict[str, str]:
    return {"EGPU_OPERATOR_LEADER_ELECTION_IDENTITY": identity, "EGPU_OPERATOR_LEADER_ELECTION_NAMESPACE": namespace}


@contextmanager
def replicas(kube: Kubectl, folder: Path, *identities: str, namespace: str = NAMESPACE) -> Iterator[list[OperatorProcess]]:
    processes = [
        OperatorProcess(kube.kubeconfig, folder / f"{identity}.log", env={**SHORT_LEASES, **leader_env(identity, namespace)})
        for identity in identities
    ]
    try:
        yield processes
    finally:
        for process in processes:
            process.stop()


def test_one_of_two_replicas_acts_and_the_follower_takes_over_a_killed_leader(
    kube: Kubectl, workspace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    names = [f"burst-{number}" for number in range(3)]
    with session_operator_stopped(operator), replicas(kube, tmp_path, "leader-a", "leader-b") as (first, second):
        first.start()
        wait_for(lambda: True if gauge(first, "egpu_operator_leader") == 1 else None, 15, "the first replica to lead")
        second.start()  # ready (its indexes warm) as a follower
        assert gauge(second, "egpu_operator_leader") == 0

        with PodLedger(kube.kubeconfig, workspace, names) as ledger:
            for name in names:  # a placement burst: six replicas at once
                apply(kube, workspace, deployment(name, "3G", 60, replicas=2, modes=MODES))
            wait_for(lambda: True if ledger.pods else None, 30, "the first replica pod of the burst")
            assert writes(second) == 0, "the follower wrote"
            first.stop(kill=True)
            killed, created_by_first = time.monotonic(), len(ledger.pods)
            wait_for(lambda: True if gauge(second, "egpu_operator_leader") == 1 else None, 30, "the follower to take over")
            takeover_s = time.monotonic() - killed
            for name in names:
                wait_for(lambda name=name: ready_on(kube, workspace, name, 2), 60, f"{name}: 2 replicas Ready")  # type: ignore[misc]
            settled_s = time.monotonic() - killed
        print(
            f"leader SIGKILLed after it created {created_by_first} of 6 replica pods: the follower led "
            f"{takeover_s:.1f} s later (lease duration 4 s); all 6 Ready {settled_s:.1f} s after the kill"
        )
        assert writes(second) > 0
        assert len(ledger.pods) == 6, f"replica pods created: {sorted(ledger.pods)}"
        assert ledger.deleted == [], "a replica pod was deleted (created twice, then removed)"
        log = (tmp_path / "leader-b.log").read_text()
        assert '"msg": "Lease acquired"' in log
        assert "leadership acquired: this replica acts" in log


def test_a_leader_killed_while_a_maintenance_evacuates_is_replaced_and_the_maintenance_finishes(
    kube: Kubectl, workspace: str, maintenances: None, operator: OperatorProcess, tmp_path: Path
) -> None:
    """The leader SIGKILLed in a GPUMaintenance's Evacuating phase, its replacement replica still loading:
    the follower takes over from the maintenance's status, surges no second replacement, keeps the
    deployment at its budget, and the maintenance reaches Ready."""
    with session_operator_stopped(operator), replicas(kube, tmp_path, "evac-a", "evac-b") as (first, second):
        first.start()
        wait_for(lambda: True if gauge(first, "egpu_operator_leader") == 1 else None, 15, "the first replica to lead")
        second.start()
        # 20 GB over a Gen3 x1 link: 23 s to load, 2.3 s in the e2e cluster, a window to kill the leader in.
        apply(kube, workspace, deployment("evacuated", "20G", 30, disruption={"minAvailable": 1}))
        [source] = wait_for(lambda: ready_on(kube, workspace, "evacuated", 1), 60, "evacuated: 1 replica Ready")
        [original] = [pod["metadata"]["name"] for pod in replica_pods(kube, workspace, "evacuated")]
        with PodLedger(kube.kubeconfig, workspace, ["evacuated"]) as ledger, ReadyWatch(kube.kubeconfig, workspace) as watch:
            wait_for(lambda: True if watch.ready("evacuated") == 1 else None, 10, "the watch to see the Ready replica")
            watch.reset()

            def others() -> list[str]:
                return sorted({pod for _, _, pod, _, _ in list(watch.timeline) if pod != original})

            gm.create(kube, "leader-evacuates", source, reason="reseat the dock")

            def evacuating() -> bool | None:
                phase = gm.get(kube, "leader-evacuates").get("status", {}).get("phase")
                return True if phase == "Evacuating" and others() else None

            wait_for(evacuating, 30, "Evacuating, with the surge of a replacement", interval_s=0.02)
            first.stop(kill=True)
            killed = time.monotonic()
            loading = watch.ready("evacuated") == 1  # only the evacuated replica is Ready: the replacement loads
            wait_for(lambda: True if gauge(second, "egpu_operator_leader") == 1 else None, 30, "the follower to take over")
            takeover_s = time.monotonic() - killed
            done = gm.wait_phase(kube, "leader-evacuates", "Ready", timeout_s=90)
            finished_s = time.monotonic() - killed
            [target] = wait_for(lambda: ready_on(kube, workspace, "evacuated", 1), 30, "evacuated: 1 replica Ready elsewhere")
            replacements = others()
            assert watch.minimum["evacuated"] >= 1, "ready replicas fell below the disruption budget"
        print(
            f"leader SIGKILLed while Evacuating (replacement still loading: {loading}): the follower led {takeover_s:.1f} s "
            f"later (lease duration 4 s), the maintenance was Ready {finished_s:.1f} s after the kill"
        )
        assert len(replacements) == 1, f"the new leader surged a second replacement: {replacements}"
        assert [name for _, name, _ in ledger.deleted] == [original], "a pod other than the evacuated one was deleted"
        assert target != source
        assert [(m["fromPod"], m["toPod"]) for m in done["status"]["moved"]] == [(f"{workspace}/{original}", replacements[0])]
        gm.complete(kube, "leader-evacuates")


def test_a_paused_leader_replaced_meanwhile_writes_nothing_when_it_resumes(
    kube: Kubectl, workspace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    """No split brain: the leader is paused (SIGSTOP) past its Lease, the follower takes over and
    places a deployment; the old leader, resumed, sees a pod event for it, asks before writing,
    learns it lost the Lease and exits (status 3) without writing."""
    with session_operator_stopped(operator), replicas(kube, tmp_path, "paused-a", "paused-b") as (first, second):
        first.start()
        wait_for(lambda: True if gauge(first, "egpu_operator_leader") == 1 else None, 15, "the first replica to lead")
        second.start()
        first.signal(signal.SIGSTOP)
        try:
            wait_for(lambda: True if gauge(second, "egpu_operator_leader") == 1 else None, 30, "the follower to take over")
            with PodLedger(kube.kubeconfig, workspace, ["after-pause"]) as ledger:
                apply(kube, workspace, deployment("after-pause", "3G", 60, replicas=2, modes=MODES))
                wait_for(lambda: ready_on(kube, workspace, "after-pause", 2), 60, "2 replicas placed by the new leader")
                first.signal(signal.SIGCONT)
                process = first.process
                assert process is not None
                wait_for(lambda: True if process.poll() is not None else None, 20, "the resumed old leader to exit")
                assert process.returncode == 3
                time.sleep(1)
            assert (len(ledger.pods), ledger.deleted) == (2, [])
        finally:
            if first.process is not None and first.process.poll() is None:
                first.signal(signal.SIGCONT)  # never leave a stopped process behind
        log = (tmp_path / "paused-a.log").read_text()
        assert "leadership lost" in log
        assert "another replica holds the Lease egpu-system/egpu-operator" in log


def test_a_second_release_reports_the_conflict_and_writes_nothing(
    kube: Kubectl, workspace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    other = f"e2e-release-{uuid.uuid4().hex[:6]}"
    kube.run("create", "namespace", other)
    try:
        with replicas(kube, tmp_path, "second-release", namespace=other) as (second,):
            second.start()
            wait_for(lambda: True if gauge(second, "egpu_operator_leader_conflict") == 1 else None, 15, "the conflict")
            apply(kube, workspace, deployment("first-release-places", "3G", 60, replicas=2, modes=MODES))
            wait_for(
                lambda: ready_on(kube, workspace, "first-release-places", 2), 60, "2 replicas Ready, placed by the first release"
            )
            time.sleep(2)  # the second release saw the deployment and its pods; it had resynced at least once (3 s)
            assert gauge(second, "egpu_operator_leader") == 0
            assert writes(second) == 0
            lease = kube.get_json("lease", "egpu-operator", "-n", other)["spec"]
            assert lease["holderIdentity"] == "second-release"  # it leads its own release, and refuses to act
        log = (tmp_path / "second-release.log").read_text()
        assert (
            f"another egpu-operator acts in this cluster: the release whose Lease is {NAMESPACE}/egpu-operator holds the "
            f"cluster claim; this one ({other}/egpu-operator) refuses to act" in log
        )
        claim = kube.get_json("crd", "inferencedeployments.egpu-operator.io")["metadata"]["annotations"]
        assert claim["egpu-operator.io/operator-lease"] == f"{NAMESPACE}/egpu-operator"
    finally:
        kube.run("delete", "namespace", other, "--wait=false", check=False)
