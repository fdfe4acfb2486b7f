"""Power requests: garbage in the owners annotation is ignored, and only whole GPUs are capped."""

import json

import pytest

from egpu_operator import power
from egpu_operator.power import desired_annotations, parse_owners, whole_gpus

UUIDS, DEFAULTS = ("GPU-a", "GPU-b"), (300, 300)


@pytest.mark.parametrize("garbage", ["5", "[1, 2]", "{not json", '{"GPU-a": 7}', "null", '"ai/one"'])
def test_garbage_owners_are_ignored_and_rewritten(garbage: str) -> None:
    owners, problem = parse_owners(garbage)
    assert owners == {}
    assert problem is not None
    assert "egpu-operator.io/power-limit-owners" in problem
    annotations = {"egpu-operator.io/power-limit-owners": garbage}
    values, shares = desired_annotations(annotations, "ai/one", 1, UUIDS, DEFAULTS, 200, None)
    assert shares == {"GPU-a": 200}
    assert json.loads(values["egpu-operator.io/power-limit-owners"]) == {"GPU-a": "ai/one"}


def test_a_missing_owners_annotation_is_not_a_problem() -> None:
    assert parse_owners(None) == ({}, None)
    assert parse_owners('{"GPU-a": "ai/one"}') == ({"GPU-a": "ai/one"}, None)


@pytest.mark.parametrize(
    ("mode", "allocatable", "gpus", "whole"),
    [
        ("bare-metal", 1, 1, True),
        ("passthrough", 4, 4, True),
        ("mig", 7, 1, False),
        ("vgpu", 1, 1, False),
        ("vgpu-host", 1, 1, False),
        ("mixed", 2, 2, False),
        ("bare-metal", 4, 1, False),  # time-sliced: four pods share one GPU
        ("bare-metal", 0, 1, False),
    ],
)
def test_power_limits_only_for_whole_gpus(mode: str, allocatable: int, gpus: int, whole: bool) -> None:
    assert whole_gpus(mode, allocatable, gpus) is whole


def test_the_nodes_an_owner_holds_limits_on_are_read_from_the_owners_annotation() -> None:
    def node(owners: str | None) -> dict[str, object]:
        return {"metadata": {"annotations": {} if owners is None else {"egpu-operator.io/power-limit-owners": owners}}}

    nodes = {
        "a": node('{"GPU-1":"ml/llm","GPU-2":"ml/other"}'),
        "b": node('{"GPU-3":"ml/other"}'),
        "c": node("ml/llm"),  # garbage that merely contains the owner's name
        "d": node(None),
    }
    assert power.owned_by(nodes, "ml/llm") == ["a"]


@pytest.mark.parametrize("garbage", ['{"GPU-a": -5}', '{"GPU-b": 65.5}', "[180]", '{"GPU-b": "65W"}', "null", "{not json"])
def test_an_unreadable_request_is_rewritten_keeping_the_other_owners_watts(garbage: str) -> None:
    status = {"GPU-b": {"requestedWatts": 150, "targetWatts": 150, "appliedWatts": 150, "setByAgentWatts": 150}}
    annotations = {
        "egpu-operator.io/power-limit-request": garbage,
        "egpu-operator.io/power-limit-owners": json.dumps({"GPU-a": "ai/one", "GPU-b": "ai/two"}),
        "egpu-operator.io/power-limit-status": json.dumps(status),
    }
    problem = power.request_problem(annotations)
    assert problem is not None
    assert problem.startswith('annotation egpu-operator.io/power-limit-request must be JSON like {"GPU-<uuid>": 200}')
    values, shares = desired_annotations(annotations, "ai/one", 1, UUIDS, DEFAULTS, 200, None)
    assert shares == {"GPU-a": 200}
    assert json.loads(values["egpu-operator.io/power-limit-request"]) == {"GPU-a": 200, "GPU-b": 150}, "ai/two's kept"
    assert power.request_problem(values) is None
