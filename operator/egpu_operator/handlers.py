"""kopf wiring: the GPUMaintenance trigger onto the operator's queue, and the operator's lifecycle.

``register`` puts every handler into one registry, bound to one ``runtime.Operator``; nothing
is registered at import and no setting is read here. Every handler has an explicit ``id``: a
nested function's default id would carry its enclosing function's name.

Reads are not kopf's: ``informers`` list and watch with server-side selectors and pages, keep
slim views, and trigger the InferenceDeployment queue themselves (``reads``, ``runtime``). kopf
watched every Pod, Lease, Service, PodDisruptionBudget and Namespace cluster-wide and filtered on
the client; its per-object machinery for 1,000 busy Nodes cost more CPU than placement
(docs/measurements.md). kopf keeps the GPUMaintenance events.
"""

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from egpu_operator import metrics
from egpu_operator.kube import GROUP, MAINTENANCES, VERSION
from egpu_operator.runtime import Operator


def register(registry: kopf.OperatorRegistry, operator: Operator) -> None:
    """Every kopf handler of the operator, into ``registry``."""
    _settings(registry)
    _triggers(registry, operator)

    @kopf.on.startup(registry=registry, id="start_workers")
    async def start_workers(**_: Any) -> None:
        await operator.start()

    @kopf.on.cleanup(registry=registry, id="stop_threads")
    async def stop_threads(**_: Any) -> None:
        operator.stop()


def _settings(registry: kopf.OperatorRegistry) -> None:
    # A registry of our own has none of the default registry's login handlers: log in the way it
    # would, through the kubernetes client that ``cli`` configured.
    @kopf.on.login(registry=registry, id="login", errors=kopf.ErrorsMode.IGNORED)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry, id="configure")
    def configure(settings: kopf.OperatorSettings, **_: object) -> None:
        # Progress and diff-base live in status, not in annotations users see and edit.
        settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
        settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(field="status.kopf.diffbase")
        settings.posting.level = logging.WARNING  # our own Events say what happened; kopf's are noise
        settings.watching.server_timeout = 300
        # No CRD scanning: it would need list and watch of every CRD in the cluster, and it cannot stop
        # a watch before it fails on a deleted CRD's 404 anyway. ``supervisor`` reads our two CRDs by
        # name and restarts this whole kopf core when one is reinstalled.
        settings.scanning.disabled = True
        # kopf's last resort SIGKILLs its thread, that is the whole process, 10 min after an exit that
        # was not asked through its stop flag; ``supervisor`` owns the exit deadline (seconds, not minutes).
        settings.process.ultimate_exiting_timeout = None
        # kopf gives up on a watch after its retries (54 s by default) and the operator would then
        # stop seeing Pods or Leases; an edge control plane can be away longer (an etcd restart on
        # an SD card). Keep retrying, 30 s apart, for about ten minutes.
        settings.networking.error_backoffs = (1, 1, 2, 3, 5, 8, 13, 21, *[30] * 18)
        # kopf starts a worker per object and ends it after this much idleness; each start and end
        # wakes every waiter on its indexing toggles. Nodes send events all the time (heartbeats), so
        # at 1,000 nodes the default 5 s cost more CPU than placement itself (docs/measurements.md).
        settings.batching.idle_timeout = 600


def _triggers(registry: kopf.OperatorRegistry, operator: Operator) -> None:
    @kopf.on.event(GROUP, VERSION, MAINTENANCES, registry=registry, id="maintenance_changed")
    async def maintenance_changed(name: str, type: str, body: Any, **kwargs: Any) -> None:
        operator.enqueue_maintenance(name)
        # The per-maintenance series follow the stored object, so they say what `kubectl get` says.
        if type == "DELETED":
            metrics.forget_maintenance(name, str((body.get("spec") or {}).get("nodeName", "")))
        else:
            metrics.observe_maintenance(_plain(body))


def _plain(value: Any) -> Any:
    """kopf's live views as plain dicts and lists, safe to hand to another thread."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
