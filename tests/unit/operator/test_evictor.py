"""One eviction backoff for both controllers, against ``FakeKube``: a refused eviction of a pod is
asked again after 2, 4, 8 ... 60 s whichever controller asks, and a success starts it over."""

from typing import Any

from egpu_operator.fakekube import BUDGET_REFUSAL, FakeKube
from egpu_operator.kube import Evictor
from egpu_operator.workqueue import Backoff
from tests.unit.operator.cluster import Clock

LABELS = {"app": "llm"}


def pod(name: str, ready: bool = True) -> dict[str, Any]:
    condition = {"type": "Ready", "status": "True" if ready else "False"}
    return {"metadata": {"name": name, "namespace": "ml", "labels": LABELS}, "status": {"conditions": [condition]}}


def guarded() -> FakeKube:
    """Two Ready pods under a budget of minAvailable 2: every eviction is refused."""
    kube = FakeKube()
    kube.pods = {("ml", "llm-0"): pod("llm-0"), ("ml", "llm-1"): pod("llm-1")}
    kube.pdbs = {("ml", "llm"): {"metadata": {"namespace": "ml", "name": "llm"},
                                 "spec": {"minAvailable": 2, "selector": {"matchLabels": LABELS}}}}  # fmt: skip
    return kube


def test_a_refused_eviction_waits_2_4_8_up_to_60_seconds() -> None:
    kube, clock = guarded(), Clock()
    evictor = Evictor(clock)
    waits = []
    for _ in range(7):
        assert evictor.evict(kube, "ml", "llm-0", "maintenance") == BUDGET_REFUSAL
        asked, started = len(kube.refused_evictions), clock.now
        while evictor.evict(kube, "ml", "llm-0", "maintenance") == BUDGET_REFUSAL and len(kube.refused_evictions) == asked:
            clock.now += 1  # asked meanwhile: the last refusal, and no request
        waits.append(clock.now - started)
        kube.refused_evictions.pop()  # the retry that ended the wait; the next round asks it again
    assert waits == [2, 4, 8, 16, 32, 60, 60]


def test_both_controllers_share_the_backoff_of_a_pod() -> None:
    kube, clock = guarded(), Clock()
    evictor = Evictor(clock)
    assert evictor.evict(kube, "ml", "llm-0", "maintenance") == BUDGET_REFUSAL
    assert evictor.evict(kube, "ml", "llm-0", "deployment") == BUDGET_REFUSAL
    assert kube.refused_evictions == ["ml/llm-0"], "the deployment's controller did not ask the budget again"
    assert evictor.evict(kube, "ml", "llm-1", "deployment") == BUDGET_REFUSAL, "another pod has a backoff of its own"
    assert kube.refused_evictions == ["ml/llm-0", "ml/llm-1"]


def test_a_success_ends_the_backoff() -> None:
    kube, clock = guarded(), Clock()
    evictor = Evictor(clock)
    assert evictor.evict(kube, "ml", "llm-0", "maintenance") == BUDGET_REFUSAL
    kube.pods[("ml", "llm-2")] = pod("llm-2")  # a replacement is Ready: the budget allows one eviction
    clock.now += 2
    assert evictor.evict(kube, "ml", "llm-0", "deployment") is None
    assert ("evict", "ml/llm-0") in kube.writes
    assert evictor.evict(kube, "ml", "llm-0", "maintenance") is None, "gone already: done, not refused"
    kube.pods[("ml", "llm-0")] = pod("llm-0")  # back (a new pod of the same name): refused at once, then 2 s
    assert evictor.evict(kube, "ml", "llm-1", "maintenance") is None
    assert evictor.evict(kube, "ml", "llm-0", "maintenance") == BUDGET_REFUSAL
    clock.now += 2
    assert evictor.evict(kube, "ml", "llm-0", "maintenance") == BUDGET_REFUSAL
    assert kube.refused_evictions == ["ml/llm-0", "ml/llm-0", "ml/llm-0"], "the second streak started at 2 s again"


def test_the_backoff_doubles_to_its_cap_and_forgets() -> None:
    backoff = Backoff(base_s=2.0, max_s=60.0)
    assert [backoff.failed("k") for _ in range(7)] == [2, 4, 8, 16, 32, 60, 60]
    backoff.forget("k")
    assert backoff.failed("k") == 2
