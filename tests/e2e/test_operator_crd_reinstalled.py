"""A CRD deleted and reinstalled under a running operator: meanwhile ``/readyz`` names the missing
CRD (``/healthz`` stays 200: a restart would not bring it back), and once it is back the operator
carries on: a GPUMaintenance created afterwards completes, an InferenceDeployment created
afterwards is placed, and a SIGTERM still ends the process in seconds.

On the kind tier (``EGPU_E2E_OPERATOR=chart``) the operator is the chart's pod: its readiness is
read from the pods' Ready condition, the CRDs are put back as helm installed them, and the parts
that signal the process skip.
"""

import json
import os
import signal
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from egpu_localcluster.kubectl import Kubectl
from egpu_localcluster.operator_process import install_crds
from tests.e2e import maintenances as gm
from tests.e2e.conftest import OperatorProcess
from tests.e2e.deployments import apply, deployment, ready_on
from tests.e2e.helpers import NAMESPACE, wait_for

pytestmark = pytest.mark.e2e
DEPLOYMENTS_CRD = "inferencedeployments.egpu-operator.io"
MAINTENANCES_CRD = "gpumaintenances.egpu-operator.io"
NODE = "laptop-rtx3060-tb"
#: Generous: the kubelet's grace period is 30 s, and issue 21 saw SIGTERM ignored for over 35 s.
STOP_DEADLINE_S = 30
CHART = os.environ.get("EGPU_E2E_OPERATOR") == "chart"


def _probe(operator: OperatorProcess, path: str) -> tuple[int, str]:
    """(HTTP status, body) of the operator process's /healthz or /readyz."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{operator.port}{path}", timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def _chart_pods_ready(kube: Kubectl) -> list[bool]:
    pods = kube.get_json("pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=operator")["items"]
    return [
        any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
        for pod in pods
        if not pod["metadata"].get("deletionTimestamp")
    ]


def _wait_reported_missing(kube: Kubectl, operator: OperatorProcess, crd: str) -> None:
    """/readyz names the missing CRD while /healthz stays 200 (on kind: the operator pods turn NotReady)."""
    if CHART:
        wait_for(lambda: True if not any(_chart_pods_ready(kube)) else None, 60, f"operator pods NotReady without {crd}")
        return
    readyz = wait_for(
        lambda: found if (found := _probe(operator, "/readyz"))[0] == 503 and crd in found[1] else None,
        60,
        f"/readyz to name {crd} as missing",
    )
    print(f"/readyz while {crd} is missing: {readyz[0]} {readyz[1].strip()}")
    healthz = _probe(operator, "/healthz")
    assert healthz[0] == 200, f"/healthz failed while only a CRD was missing: {healthz}"


def _wait_ready_again(kube: Kubectl, operator: OperatorProcess, crd: str) -> None:
    if CHART:
        wait_for(lambda: True if (ready := _chart_pods_ready(kube)) and all(ready) else None, 90, "operator pods Ready")
        return
    wait_for(lambda: True if _probe(operator, "/readyz")[0] == 200 else None, 60, f"/readyz 200 once {crd} is back")


def _saved(kube: Kubectl, crd: str) -> dict[str, Any]:
    """The CRD as installed, to put back as it was (on kind: with helm's labels and annotations)."""
    found = kube.get_json("crd", crd)
    metadata = found["metadata"]
    keep = ("name", "labels", "annotations")
    return {**found, "metadata": {key: metadata[key] for key in keep if key in metadata}, "status": {}}


def _reinstall(kube: Kubectl, saved: dict[str, Any]) -> None:
    if not CHART:
        install_crds(kube)
        return
    kube.run("create", "-f", "-", stdin=json.dumps(saved))
    kube.run("wait", "--for", "condition=Established", "--timeout", "30s", "crd", saved["metadata"]["name"])


def _delete_and_reinstall(kube: Kubectl, operator: OperatorProcess, crd: str) -> None:
    saved = _saved(kube, crd)
    kube.run("delete", "crd", crd, "--wait=true", "--timeout=60s")
    try:
        _wait_reported_missing(kube, operator, crd)
    finally:
        _reinstall(kube, saved)
    _wait_ready_again(kube, operator, crd)


def _operator_carries_on(kube: Kubectl, workspace: str, name: str) -> None:
    """A GPUMaintenance created now completes; an InferenceDeployment created now is placed."""
    gm.create(kube, name, NODE)
    gm.wait_phase(kube, name, "Ready")
    gm.complete(kube, name)
    apply(kube, workspace, deployment(name, "1G", 60))
    wait_for(lambda: ready_on(kube, workspace, name, 1), 60, f"{name}: 1 replica Ready")


def _sigterm_ends_it(operator: OperatorProcess) -> float:
    """SIGTERM the operator process; its exit code must be 0 within the deadline. Returns the seconds it took;
    the caller starts it again (the session's operator, for the tests that follow)."""
    assert operator.process is not None, "the operator is not running"
    assert operator.process.poll() is None, "the operator had exited"
    started = time.monotonic()
    operator.process.send_signal(signal.SIGTERM)
    try:
        code = operator.process.wait(timeout=STOP_DEADLINE_S)
    finally:
        if operator.process.poll() is None:
            operator.process.kill()
            operator.process.wait()
        operator.process = None
    stopped_s = time.monotonic() - started
    print(f"operator stopped {stopped_s:.1f} s after SIGTERM, exit code {code}")
    assert code == 0
    return stopped_s


def _sigterm_and_restart(operator: OperatorProcess) -> None:
    if CHART:
        return  # the chart's pod is not this test's to signal
    try:
        _sigterm_ends_it(operator)
    finally:
        operator.start()


def test_inference_deployment_crd_deleted_and_reinstalled(
    kube: Kubectl, operator: OperatorProcess, workspace: str, maintenances: None
) -> None:
    apply(kube, workspace, deployment("before", "1G", 60))
    wait_for(lambda: ready_on(kube, workspace, "before", 1), 60, "before: 1 replica Ready")

    _delete_and_reinstall(kube, operator, DEPLOYMENTS_CRD)

    _operator_carries_on(kube, workspace, "after-idep-crd")
    _sigterm_and_restart(operator)


def test_gpu_maintenance_crd_deleted_and_reinstalled(
    kube: Kubectl, operator: OperatorProcess, workspace: str, maintenances: None
) -> None:
    _delete_and_reinstall(kube, operator, MAINTENANCES_CRD)

    _operator_carries_on(kube, workspace, "after-maintenance-crd")
    _sigterm_and_restart(operator)


def test_sigterm_while_a_crd_is_missing_ends_the_operator(kube: Kubectl, operator: OperatorProcess) -> None:
    if CHART:
        pytest.skip("signals the operator process; here the operator is the chart's pod (EGPU_E2E_OPERATOR=chart)")
    saved = _saved(kube, MAINTENANCES_CRD)
    kube.run("delete", "crd", MAINTENANCES_CRD, "--wait=true", "--timeout=60s")
    try:
        _wait_reported_missing(kube, operator, MAINTENANCES_CRD)
        _sigterm_ends_it(operator)
    finally:
        _reinstall(kube, saved)
        if operator.process is None:
            operator.start()
