"""The kopf wiring: every index the operator reads is registered under the name it is read by."""

import kopf

from egpu_operator import handlers
from egpu_operator.config import OperatorConfig
from egpu_operator.fakekube import FakeKube
from egpu_operator.runtime import INDEXES, Operator


def test_every_index_the_operator_reads_is_registered_under_that_name() -> None:
    registry = kopf.OperatorRegistry()
    handlers.register(registry, Operator(OperatorConfig(), FakeKube(), watch_client=None))
    indexes = {handler.id for handler in registry._indexing.get_all_handlers()}
    assert indexes == set(INDEXES)
    events = {handler.id for handler in registry._watching.get_all_handlers()}
    assert events == {"replica_pod_changed", "deployment_changed", "maintenance_changed", "first_listing", "service_changed"}


def test_registering_twice_leaves_the_registries_apart() -> None:
    first, second = kopf.OperatorRegistry(), kopf.OperatorRegistry()
    handlers.register(first, Operator(OperatorConfig(), FakeKube(), watch_client=None))
    assert not list(second._indexing.get_all_handlers())
