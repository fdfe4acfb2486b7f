"""One eviction backoff for both controllers, against ``FakeKube``: a refused eviction of a pod is
asked again after 2, 4, 8 ... 60 s whichever controller asks, and a success starts it over."""

import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from egpu_operator.fakekube import BUDGET_REFUSAL, TWO_BUDGETS_REFUSAL, FakeKube
from egpu_operator.kube import ApiKube, Evictor
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


def test_two_budgets_over_one_pod_are_a_refusal_with_the_same_backoff() -> None:
    kube, clock = guarded(), Clock()
    kube.pdbs[("ml", "llm-too")] = {"metadata": {"namespace": "ml", "name": "llm-too"},
                                    "spec": {"minAvailable": 0, "selector": {"matchLabels": LABELS}}}  # fmt: skip
    evictor = Evictor(clock)
    for _ in range(20):  # ten seconds of a controller asking twice a second
        assert evictor.evict(kube, "ml", "llm-0", "maintenance") == TWO_BUDGETS_REFUSAL
        clock.now += 0.5
    assert len(kube.refused_evictions) == 3, "asked at 0, 2 and 6 s: the backoff, not every time"


class RefusingCore:
    """``CoreV1Api`` as far as an eviction goes: answers with ``status`` and ``body``."""

    def __init__(self, status: int, body: str) -> None:
        self.status, self.body = status, body

    def create_namespaced_pod_eviction(self, *args: Any, **kwargs: Any) -> None:
        error = ApiException(status=self.status, reason="Internal Server Error")
        error.body = self.body
        raise error


@pytest.mark.parametrize(
    ("status", "message", "refusal"),
    [
        (404, "pods \"llm-0\" not found", None),
        (429, BUDGET_REFUSAL, BUDGET_REFUSAL),
        (500, "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
         TWO_BUDGETS_REFUSAL),
        (500, "", "the API server refused the eviction (HTTP 500): Internal Server Error"),
        (403, "evictions is forbidden", "the API server refused the eviction (HTTP 403): evictions is forbidden"),
    ],
)  # fmt: skip
def test_every_answer_but_404_is_a_refusal_quoting_the_api_server(status: int, message: str, refusal: str | None) -> None:
    kube = ApiKube.__new__(ApiKube)  # only the eviction path, against a stub of the client
    kube._core = RefusingCore(status, json.dumps({"message": message}) if message else "")
    assert kube.evict_pod("ml", "llm-0") == refusal
