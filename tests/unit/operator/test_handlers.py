"""The kopf wiring: every index the operator reads is registered under the name it is read by, and what
the maintenance events export."""

import asyncio

import kopf
from prometheus_client import generate_latest

from egpu_operator import handlers
from egpu_operator.config import OperatorConfig
from egpu_operator.fakekube import FakeKube
from egpu_operator.metrics import REGISTRY
from egpu_operator.runtime import DRA_INDEXES, INDEXES, Operator


def test_every_index_the_operator_reads_is_registered_under_that_name() -> None:
    registry = kopf.OperatorRegistry()
    handlers.register(registry, Operator(OperatorConfig(), FakeKube(), watch_client=None))
    indexes = {handler.id for handler in registry._indexing.get_all_handlers()}
    assert indexes == {*INDEXES, *DRA_INDEXES}
    events = {handler.id for handler in registry._watching.get_all_handlers()}
    assert events == {"replica_pod_changed", "deployment_changed", "maintenance_changed", "first_listing", "service_changed"}


def test_without_dra_drivers_resource_k8s_io_is_not_watched() -> None:
    registry = kopf.OperatorRegistry()
    handlers.register(registry, Operator(OperatorConfig(dra_drivers=()), FakeKube(), watch_client=None))
    assert {handler.id for handler in registry._indexing.get_all_handlers()} == set(INDEXES)


def test_registering_twice_leaves_the_registries_apart() -> None:
    first, second = kopf.OperatorRegistry(), kopf.OperatorRegistry()
    handlers.register(first, Operator(OperatorConfig(), FakeKube(), watch_client=None))
    assert not list(second._indexing.get_all_handlers())


def test_a_maintenance_event_exports_its_phase_and_a_deletion_drops_it() -> None:
    registry = kopf.OperatorRegistry()
    handlers.register(registry, Operator(OperatorConfig(), FakeKube(), watch_client=None))
    handler = next(h for h in registry._watching.get_all_handlers() if h.id == "maintenance_changed")
    body = {"metadata": {"name": "reseat-a"}, "spec": {"nodeName": "pi5-a"}, "status": {"phase": "Failed"}}
    indexes = {name: {} for name in INDEXES}
    failed = 'egpu_operator_gpu_maintenance_phase{name="reseat-a",node="pi5-a",phase="Failed"} 1.0'

    async def event(kind: str) -> None:
        await handler.fn(name="reseat-a", type=kind, body=body, **indexes)  # type: ignore[misc]

    asyncio.run(event("MODIFIED"))
    assert failed in generate_latest(REGISTRY).decode()
    asyncio.run(event("DELETED"))
    assert 'name="reseat-a"' not in generate_latest(REGISTRY).decode()
