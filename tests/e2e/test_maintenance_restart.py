"""The operator killed while a maintenance's replacement is still loading resumes from status:
one replacement, no second surge, and the deployment never below its budget."""

import pytest

from egpu_localcluster.kubectl import Kubectl
from egpu_localcluster.readywatch import ReadyWatch
from tests.e2e import maintenances as gm
from tests.e2e.conftest import OperatorProcess
from tests.e2e.deployments import apply, deployment, ready_on, replica_pods
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e


def test_operator_killed_while_the_replacement_loads_resumes_without_a_second_surge(
    kube: Kubectl, workspace: str, maintenances: None, operator: OperatorProcess
) -> None:
    # 20 GB over a Gen3 x1 link (the Pi 5 dock or the switch's uplink): 23 s to load, 2.3 s in the
    # e2e cluster, a window wide enough to kill the operator in.
    apply(kube, workspace, deployment("steady", "20G", 30, disruption={"minAvailable": 1}))
    [source] = wait_for(lambda: ready_on(kube, workspace, "steady", 1), 60, "steady: 1 replica Ready")
    [original] = [pod["metadata"]["name"] for pod in replica_pods(kube, workspace, "steady")]

    try:
        with ReadyWatch(kube.kubeconfig, workspace) as watch:
            wait_for(lambda: True if watch.ready("steady") == 1 else None, 10, "the watch to see the Ready replica")
            watch.reset()

            def others(ready_only: bool = False) -> list[str]:
                return sorted(
                    {pod for _, _, pod, ready, _ in list(watch.timeline) if pod != original and (ready or not ready_only)}
                )

            gm.create(kube, "restart-check", source, reason="reseat the dock")
            [replacement] = wait_for(lambda: others() or None, 30, "the surge of a replacement", interval_s=0.02)
            operator.stop(kill=True)
            assert others(ready_only=True) == [], "the operator was to be killed while the replacement loads"

            operator.start()
            done = gm.wait_phase(kube, "restart-check", "Ready", timeout_s=60)
            [target] = wait_for(lambda: ready_on(kube, workspace, "steady", 1), 30, "steady: 1 replica Ready elsewhere")
            assert others() == [replacement], "the restarted operator surged a second replacement"
            assert watch.minimum["steady"] >= 1, "ready replicas fell below the disruption budget"

        assert target != source
        assert [(m["fromPod"], m["toPod"]) for m in done["status"]["moved"]] == [(f"{workspace}/{original}", replacement)]
        gm.complete(kube, "restart-check")
    finally:
        if operator.process is None:
            operator.start()
