"""The kopf wiring: every index the operator reads is registered under the name it is read by."""

import kopf

from egpu_operator import handlers
from egpu_operator.config import OperatorConfig
from egpu_operator.fakekube import FakeKube
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
