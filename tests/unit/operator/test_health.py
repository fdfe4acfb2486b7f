"""/metrics, /healthz and /readyz: what each answers, and what the operator reports to them."""

import asyncio
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from egpu_operator import reads
from egpu_operator.config import OperatorConfig
from egpu_operator.fakekube import FakeKube
from egpu_operator.health import HealthServer
from egpu_operator.metrics import REGISTRY
from egpu_operator.runtime import LOOP_STALL_S, Operator


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def server() -> Iterator[tuple[HealthServer, list[str | None]]]:
    answers: list[str | None] = [None, "waiting for the first node listing"]  # healthz, readyz
    running = HealthServer(0, REGISTRY, lambda: answers[0], lambda: answers[1], host="127.0.0.1").start()
    yield running, answers
    running.stop()


def test_each_endpoint_answers_what_it_is_for(server: tuple[HealthServer, list[str | None]]) -> None:
    running, answers = server
    status, metrics = get(running.port, "/metrics")
    assert status == 200
    assert "egpu_operator_reconciles_total" in metrics
    assert get(running.port, "/healthz") == (200, "ok\n")
    assert get(running.port, "/readyz") == (503, "waiting for the first node listing\n")
    answers[0], answers[1] = "stopped: egpu-worker-0", None
    assert get(running.port, "/healthz") == (503, "stopped: egpu-worker-0\n")
    assert get(running.port, "/readyz") == (200, "ok\n")
    assert get(running.port, "/anything")[0] == 404


def operator() -> Operator:
    return Operator(OperatorConfig(), FakeKube(), watch_client=None)


def test_ready_once_every_informer_listed_and_not_while_a_crd_is_missing() -> None:
    async def scenario() -> list[str | None]:
        running = operator()
        informers = running.informers
        answers = [running.readiness_problem()]
        for name in informers.by_name:
            if name not in (reads.NODES, reads.SLICES):
                informers[name].replace([])
        waiting = asyncio.create_task(running._ready())
        await asyncio.sleep(0.05)
        answers.append(running.readiness_problem())
        informers[reads.NODES].replace([])
        informers[reads.SLICES].state = "missing"  # resource.k8s.io not served: optional
        await asyncio.wait_for(waiting, 5)
        answers.append(running.readiness_problem())
        informers[reads.DEPLOYMENTS].state = "missing"  # the InferenceDeployment CRD deleted
        answers.append(running.readiness_problem())
        return answers

    everything = ", ".join(sorted(reads.build(OperatorConfig(), None).by_name))
    assert asyncio.run(scenario()) == [
        f"waiting for the first listing of {everything}",
        "waiting for the first listing of nodes, resourceslices",
        None,
        "not served by the API server (CRD or API not installed): deployments",
    ]


def test_unhealthy_when_the_loop_stalls_or_a_worker_stops() -> None:
    async def scenario() -> list[str | None]:
        running = operator()
        answers = [running.health_problem()]  # before start: kopf is starting
        running._last_beat = 100.0
        answers.append(running.health_problem(now=100.0 + LOOP_STALL_S - 1))
        answers.append(running.health_problem(now=100.0 + LOOP_STALL_S + 1))

        async def crash() -> None:
            raise RuntimeError("boom")

        running._spawn(crash(), "egpu-worker-0")
        await asyncio.sleep(0.01)
        answers.append(running.health_problem(now=100.0))
        return answers

    assert asyncio.run(scenario()) == [
        None,
        None,
        f"the event loop has not turned for {LOOP_STALL_S + 1:.0f} s",
        "stopped: egpu-worker-0",
    ]
