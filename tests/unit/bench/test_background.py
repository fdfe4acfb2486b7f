"""The background pods of bench/placement_scale.py: how they are dealt, what they request, how they are created."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[3] / "bench"))  # bench/ holds scripts, not a package

import background


def node(name: str, cpu: str, memory: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"capacity": {"cpu": cpu, "memory": memory, "pods": "110"}}}


def test_ten_pods_a_node_request_half_of_each_node_between_them() -> None:
    nodes = [node("pi", "4", "8192Mi"), node("server", "64", "524288Mi")]
    pods = background.background_pods(nodes, 20)
    assert [pod["spec"]["nodeName"] for pod in pods[:3]] == ["pi", "server", "pi"]
    pi = [pod for pod in pods if pod["spec"]["nodeName"] == "pi"]
    assert len(pi) == 10
    assert pi[0]["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "200m", "memory": "409Mi"}
    assert len({pod["metadata"]["name"] for pod in pods}) == 20
    assert all(pod["metadata"]["namespace"] == "background" for pod in pods)


@pytest.mark.parametrize(("pods", "nodes", "per_node"), [(0, 5, 0), (50_000, 5_000, 10), (10_001, 5_000, 3), (500, 5, 100)])
def test_pods_per_node_is_the_most_any_node_gets(pods: int, nodes: int, per_node: int) -> None:
    assert background.pods_per_node(pods, nodes) == per_node


def test_more_pods_than_nodes_hold_names_the_flag_and_the_limit() -> None:
    with pytest.raises(background.BackgroundError, match=r"--background-pods 501 .* use at most 500"):
        background.pods_per_node(501, 5)


def test_chunks_split_into_lists() -> None:
    items = [{"kind": "Pod", "metadata": {"name": str(index)}} for index in range(5)]
    lists = list(background.chunks(items, 2))
    assert [len(chunk["items"]) for chunk in lists] == [2, 2, 1]
    assert all(chunk["kind"] == "List" for chunk in lists)


def test_create_concurrently_sends_every_item_once_and_raises_on_a_failed_chunk() -> None:
    sent: list[str] = []

    def create(stdin: str) -> subprocess.CompletedProcess[str]:
        names = [item["metadata"]["name"] for item in json.loads(stdin)["items"]]
        sent.extend(names)
        failed = "7" in names
        return subprocess.CompletedProcess([], 1 if failed else 0, "", 'pods "7" is forbidden' if failed else "")

    items = [{"metadata": {"name": str(index)}} for index in range(7)]
    background.create_concurrently(create, items, chunk_size=3, workers=2)
    assert sorted(sent, key=int) == [str(index) for index in range(7)]
    with pytest.raises(RuntimeError, match="forbidden"):
        background.create_concurrently(create, [*items, {"metadata": {"name": "7"}}], chunk_size=3)
