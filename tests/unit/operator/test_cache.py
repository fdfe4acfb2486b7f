"""The controllers' shared cache: node facts by content, assume/forget of GPUs, expectations."""

import copy
from typing import Any

from egpu_operator.cache import EXPECTATION_S, RESERVATION_S, Cache
from egpu_operator.liveness import Liveness
from egpu_operator.placement import PodView


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def alive(_: str) -> Liveness:
    return Liveness.ALIVE


def test_node_facts_are_reused_for_an_equal_node_and_recomputed_for_a_changed_one(nodes: dict[str, Any]) -> None:
    cache = Cache()
    first, _ = cache.node_facts(nodes, alive)
    again, _ = cache.node_facts(copy.deepcopy(nodes), alive)  # new dicts, same content: the watch relisted
    assert all(again[name] is first[name] for name in nodes)
    name = next(iter(nodes))
    changed = copy.deepcopy(nodes)
    changed[name]["spec"]["unschedulable"] = True
    after, _ = cache.node_facts(changed, alive)
    assert after[name].unschedulable is True
    assert first[name].unschedulable is False


def test_node_facts_never_come_from_a_node_that_was_freed_and_replaced(nodes: dict[str, Any]) -> None:
    """The old cache compared id(): a new dict at a freed dict's address returned stale facts."""
    cache = Cache()
    name = next(iter(nodes))
    for unschedulable in (False, True, False, True):
        node = copy.deepcopy(nodes[name])
        node["spec"]["unschedulable"] = unschedulable
        facts, _ = cache.node_facts({name: node}, alive)
        assert facts[name].unschedulable is unschedulable
        del node


def test_node_facts_follow_the_agents_liveness_and_drop_gone_nodes(nodes: dict[str, Any]) -> None:
    cache = Cache()
    name = next(iter(nodes))
    cache.node_facts(nodes, alive)
    dead, _ = cache.node_facts(nodes, lambda node: Liveness.DEAD if node == name else Liveness.ALIVE)
    assert dead[name].liveness is Liveness.DEAD
    assert set(cache.node_facts({name: nodes[name]}, alive)[0]) == {name}


def test_an_assumed_gpu_is_taken_until_the_index_counts_its_pod() -> None:
    cache = Cache()
    cache.assume("llm-0-abcde", "node-a")
    assert cache.free_gpus({"node-a": 1, "node-b": 1}, set()) == {"node-a": 0, "node-b": 1}
    assert cache.free_gpus({"node-a": 0, "node-b": 1}, {"llm-0-abcde"}) == {"node-a": 0, "node-b": 1}
    assert cache.reserved() == {}


def test_a_refused_pod_forgets_its_gpu_at_once() -> None:
    cache = Cache()
    cache.assume("llm-0-abcde", "node-a")
    cache.forget("llm-0-abcde")
    assert cache.free_gpus({"node-a": 1}, set()) == {"node-a": 1}


def test_an_unconfirmed_reservation_lapses() -> None:
    clock = Clock()
    cache = Cache(clock=clock)
    cache.assume("llm-0-abcde", "node-a")
    clock.now += RESERVATION_S - 1
    assert cache.free_gpus({"node-a": 1}, set()) == {"node-a": 0}
    clock.now += 2
    assert cache.free_gpus({"node-a": 1}, set()) == {"node-a": 1}


def test_expectations_hold_a_deployment_until_the_index_shows_its_creates_and_deletes() -> None:
    clock = Clock()
    cache = Cache(clock=clock)
    assert cache.caught_up("ns/llm", [])
    cache.expect("ns/llm", {"llm-1-new"}, {"llm-0-old"})
    old = PodView("llm-0-old", 0, "node-a")
    assert not cache.caught_up("ns/llm", [old])
    assert not cache.caught_up("ns/llm", [old, PodView("llm-1-new", 1, "node-b")])
    gone = PodView("llm-0-old", 0, "node-a", terminating=True)
    assert cache.caught_up("ns/llm", [gone, PodView("llm-1-new", 1, "node-b")])
    assert cache.caught_up("ns/llm", [])  # met expectations are dropped


def test_unmet_expectations_lapse() -> None:
    clock = Clock()
    cache = Cache(clock=clock)
    cache.expect("ns/llm", {"llm-1-new"}, set())
    clock.now += EXPECTATION_S + 1
    assert cache.caught_up("ns/llm", [])


def test_a_budget_is_written_once_until_the_index_shows_it() -> None:
    cache = Cache()
    assert cache.budget_pending("ns/llm", 1, None)
    cache.budget_written("ns/llm", 1)
    assert not cache.budget_pending("ns/llm", 1, None)
    assert cache.budget_pending("ns/llm", 2, None), "a different value is written again"
    assert not cache.budget_pending("ns/llm", 1, 1)


def test_reports_and_filings_happen_once() -> None:
    cache = Cache()
    assert cache.first_report("node-a", "garbage")
    assert not cache.first_report("node-a", "garbage")
    assert cache.first_report("node-b", "garbage")
    assert cache.first_filing("gpu-lost-node-a")
    assert not cache.first_filing("gpu-lost-node-a")
