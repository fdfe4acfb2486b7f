"""What fault tests share: a small service of replicas, run through a fault while a ledger
(``egpu_localcluster.ledger``) counts what happened to its pods."""

import time
from collections.abc import Callable

from egpu_localcluster.kubectl import Kubectl
from egpu_localcluster.ledger import PodLedger
from tests.e2e.deployments import apply, deployment, ready_on, status
from tests.e2e.helpers import wait_for

#: The service every fault test runs: replicas, and the budget each must keep.
SERVICE = {"chat": (3, 2), "embed": (2, 1)}


def start_service(kube: Kubectl, namespace: str) -> dict[str, list[str]]:
    """Both deployments Ready; returns the nodes of each one's replicas."""
    apply(kube, namespace, deployment("chat", "4G", 60, 3, ("bare-metal", "passthrough"), disruption={"minAvailable": 2}))
    apply(kube, namespace, deployment("embed", "1G", 60, 2, ("bare-metal", "passthrough"), disruption={"minAvailable": 1}))
    return {
        name: wait_for(lambda name=name, count=count: ready_on(kube, namespace, name, count), 90, f"{name}: {count} Ready")  # type: ignore[misc]
        for name, (count, _) in SERVICE.items()
    }


def service_ready(kube: Kubectl, namespace: str) -> bool | None:
    """True once every deployment reports all its replicas Ready again."""
    try:
        return True if all(status(kube, namespace, n).get("readyReplicas") == c for n, (c, _) in SERVICE.items()) else None
    except Exception:  # the API server may still be coming back
        return None


def report(fault: str, ledger: PodLedger, recovery_s: float) -> str:
    """One line for the test log: what the fault cost."""
    fewest = ", ".join(f"{name} {ledger.minimum.get(name)}/{count}" for name, (count, _) in SERVICE.items())
    return f"{fault}: fewest Ready {fewest}; pods deleted {len(ledger.deleted)}; service Ready again {recovery_s:.1f} s after"


def survive(
    kube: Kubectl, namespace: str, fault: str, inject: Callable[[], None], recover: Callable[[], None], length_s: float,
    watch_after_s: float = 30.0,
) -> PodLedger:  # fmt: skip
    """Run the service through one fault: inject it, hold it ``length_s``, recover, then keep
    watching ``watch_after_s`` (the original defect deleted replicas about 11 s after an outage
    ended). Prints what it cost; the caller asserts."""
    start_service(kube, namespace)
    with PodLedger(kube.kubeconfig, namespace, SERVICE) as ledger:
        inject()
        try:
            time.sleep(length_s)  # the fault itself: nothing to poll for while it lasts
        finally:
            recover()
        back = time.monotonic()
        wait_for(lambda: service_ready(kube, namespace), 180, "every deployment Ready again after the fault")
        recovery_s = time.monotonic() - back
        deadline = back + watch_after_s
        while time.monotonic() < deadline and not ledger.deleted:
            time.sleep(0.5)
        # Once more: kube-controller-manager exits when it loses its leader lease in an outage, and
        # may do so after the first restart; every recovery step is idempotent.
        recover()
    print(report(fault, ledger, recovery_s))
    return ledger


def assert_nothing_lost(ledger: PodLedger) -> None:
    assert ledger.deleted == [], f"replica pods deleted while their nodes still served: {ledger.deleted}"
    for name, (count, budget) in SERVICE.items():
        assert ledger.minimum[name] >= budget, f"{name} fell to {ledger.minimum[name]} Ready, below its budget {budget}"
        assert ledger.ready(name) == count
