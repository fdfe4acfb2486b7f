"""The kopf wiring: kopf keeps only the GPUMaintenance events (reads are the informers'), and what
the maintenance events export."""

import asyncio

import kopf
from prometheus_client import generate_latest

from egpu_operator import handlers
from egpu_operator.config import OperatorConfig
from egpu_operator.fakekube import FakeKube
from egpu_operator.metrics import REGISTRY
from egpu_operator.runtime import Operator


def test_kopf_indexes_nothing_and_watches_only_maintenances() -> None:
    registry = kopf.OperatorRegistry()
    handlers.register(registry, Operator(OperatorConfig(), FakeKube(), watch_client=None))
    assert not list(registry._indexing.get_all_handlers())
    assert {handler.id for handler in registry._watching.get_all_handlers()} == {"maintenance_changed"}
    assert {handler.selector.any_name for handler in registry._watching.get_all_handlers()} == {"gpumaintenances"}  # type: ignore[union-attr]


def test_registering_twice_leaves_the_registries_apart() -> None:
    first, second = kopf.OperatorRegistry(), kopf.OperatorRegistry()
    handlers.register(first, Operator(OperatorConfig(), FakeKube(), watch_client=None))
    assert not list(second._watching.get_all_handlers())


def test_a_maintenance_event_exports_its_phase_and_a_deletion_drops_it() -> None:
    registry = kopf.OperatorRegistry()
    handlers.register(registry, Operator(OperatorConfig(), FakeKube(), watch_client=None))
    handler = next(h for h in registry._watching.get_all_handlers() if h.id == "maintenance_changed")
    body = {"metadata": {"name": "reseat-a"}, "spec": {"nodeName": "pi5-a"}, "status": {"phase": "Failed"}}
    failed = 'egpu_operator_gpu_maintenance_phase{name="reseat-a",node="pi5-a",phase="Failed"} 1.0'

    async def event(kind: str) -> None:
        await handler.fn(name="reseat-a", type=kind, body=body)  # type: ignore[misc]

    asyncio.run(event("MODIFIED"))
    assert failed in generate_latest(REGISTRY).decode()
    asyncio.run(event("DELETED"))
    assert 'name="reseat-a"' not in generate_latest(REGISTRY).decode()
