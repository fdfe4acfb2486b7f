"""A malformed power-limit request (negative, 0, 65.5, an array, "65W", null): the GPU keeps its
limit, each new bad value gets one Event naming the annotation and the form it takes, and the
operator rewrites the request of a GPU it manages without the limit ever dropping."""

import json
from typing import Any

import pytest

from egpu_localcluster.kubectl import Kubectl
from egpu_node_agent.simulator import FleetSimulator
from tests.e2e.deployments import apply, deployment, ready_on
from tests.e2e.helpers import node, wait_for

pytestmark = pytest.mark.e2e
NODE = "minipc-rtx4070ti"
REQUEST, STATUS = "egpu-operator.io/power-limit-request", "egpu-operator.io/power-limit-status"
BAD_VALUES = ["-5", "0", "65.5", "[180]", '"65W"', "null"]


def invalid_request_events(kube: Kubectl) -> list[dict[str, Any]]:
    found = kube.get_json("events", "-n", "default", "--field-selector", f"involvedObject.name={NODE}")["items"]
    return [event for event in found if event["reason"] == "InvalidPowerRequest"]


def polls(simulator: FleetSimulator) -> float:
    return simulator.metrics.registry.get_sample_value("egpu_node_agent_poll_seconds_count", {"node": NODE}) or 0.0


def test_a_malformed_request_keeps_the_limit_and_is_reported_per_value(kube: Kubectl, simulator: FleetSimulator) -> None:
    host = simulator.hosts[NODE]
    gpus = wait_for(lambda: node(kube, NODE)["metadata"]["annotations"].get("egpu-operator.io/gpus"), 10, "the GPUs")
    uuid = json.loads(gpus)[0]["uuid"]
    power = host.nvml.gpus[0].power_mw
    assert power is not None
    _, default_mw, min_mw, _ = power
    watts = (default_mw + min_mw) // 2000
    kube.run("annotate", "node", NODE, f"{REQUEST}={json.dumps({uuid: watts})}", "--overwrite")
    try:
        wait_for(lambda: True if (host.nvml.gpus[0].power_mw or (0,))[0] == watts * 1000 else None, 10, f"{watts} W applied")
        status = node(kube, NODE)["metadata"]["annotations"][STATUS]
        before = len(invalid_request_events(kube))
        for count, value in enumerate(BAD_VALUES, start=1):
            kube.run("annotate", "node", NODE, f'{REQUEST}={{"{uuid}": {value}}}', "--overwrite")
            events = wait_for(lambda: e if len(e := invalid_request_events(kube)) >= before + count else None,  # noqa: B023
                              10, f"an InvalidPowerRequest event for {value}")  # fmt: skip
            newest = max(events, key=lambda event: event["metadata"]["creationTimestamp"])["message"]
            assert newest.startswith(
                'annotation egpu-operator.io/power-limit-request must be JSON like {"GPU-<uuid>": 200}, whole watts above 0 '
                f'for each GPU; GPU "{uuid}": {value} is not a whole number of watts above 0'
            ), newest
            assert newest.endswith("; the current power limits are kept until it is fixed")
            assert (host.nvml.gpus[0].power_mw or (0,))[0] == watts * 1000, f"{value}: the limit was not kept"
            assert node(kube, NODE)["metadata"]["annotations"][STATUS] == status, f"{value}: the status changed"
        # One Event per value, however many polls saw it: none more after a few polls of the last one.
        seen = polls(simulator)
        wait_for(lambda: True if polls(simulator) >= seen + 3 else None, 15, "three more polls")
        assert len(invalid_request_events(kube)) == before + len(BAD_VALUES)
        assert (host.nvml.gpus[0].power_mw or (0,))[0] == watts * 1000
    finally:
        kube.run("annotate", "node", NODE, f"{REQUEST}-")
    wait_for(lambda: True if (host.nvml.gpus[0].power_mw or (0,))[0] == default_mw else None, 10, "the default restored")


def test_the_operator_rewrites_an_unreadable_request_and_no_limit_drops(
    kube: Kubectl, workspace: str, simulator: FleetSimulator
) -> None:
    apply(kube, workspace, deployment("powered-bad", "6G", 20, modes=("passthrough",), power={"fractionOfDefault": 0.5}))
    [where] = wait_for(lambda: ready_on(kube, workspace, "powered-bad", 1), 60, "powered-bad: Ready")
    host = simulator.hosts[where]

    def requested() -> dict[str, int] | None:
        text = node(kube, where)["metadata"].get("annotations", {}).get(REQUEST, "")
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return value if isinstance(value, dict) and value and all(isinstance(w, int) for w in value.values()) else None

    [(uuid, watts)] = wait_for(requested, 30, "the operator's request").items()
    index = next(i for i, gpu in enumerate(host.nvml.gpus) if gpu.uuid == uuid)
    wait_for(lambda: True if (host.nvml.gpus[index].power_mw or (0,))[0] == watts * 1000 else None, 15, f"{watts} W applied")

    kube.run("annotate", "node", where, f'{REQUEST}={{"{uuid}": "65W"}}', "--overwrite")
    limits: set[int] = set()

    def rewritten() -> dict[str, int] | None:
        limits.add((host.nvml.gpus[index].power_mw or (0,))[0])
        return requested()

    assert wait_for(rewritten, 40, "the request rewritten by the operator") == {uuid: watts}
    assert limits == {watts * 1000}, "the limit never left the requested watts"
    events = kube.get_json("events", "-n", workspace, "--field-selector", "involvedObject.name=powered-bad")["items"]
    [rewrite] = [e for e in events if e["reason"] == "PowerRequestRewritten"]
    assert f'GPU "{uuid}": "65W" is not a whole number of watts above 0' in rewrite["message"]
    assert rewrite["message"].endswith("; ignored and rewritten")
    kube.run("delete", "idep", "powered-bad", "-n", workspace, "--wait=true", "--timeout=60s")
