"""``FakePublisher``: the agent's ``Publisher`` seam kept in memory, for tests (httpx's ``MockTransport``
pattern, like the operator's ``fakekube``).

It holds one node's labels, annotations and GPUHealthy condition as plain data and answers as
``NodePublisher`` does where the poll loop cares:

- a write goes through ``publisher.diff``, so only changed project keys are written and a steady
  node gets no write at all; ``writes`` lists every metadata patch in order;
- ``fail`` makes ``publish``, ``set_condition`` or ``heartbeat`` raise the API server's 503 until
  ``recover``; a failed write changes nothing, as a refused request would;
- ``request_power`` sets the power request annotation and wakes the loop, as the operator does.

Events and Lease renewals are recorded (``events``, ``heartbeats``); events never raise.
"""

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from kubernetes.client.exceptions import ApiException

from egpu_api import keys
from egpu_node_agent.publisher import Publisher, condition_status, diff

Write = Literal["publish", "set_condition", "heartbeat"]


@dataclass(frozen=True)
class RecordedEvent:
    reason: str
    message: str
    warning: bool


@dataclass(frozen=True)
class Condition:
    status: str  # "True", "False" or "Unknown"
    reason: str
    message: str


class FakePublisher:
    def __init__(
        self, node_name: str = "node", labels: Mapping[str, str] | None = None, annotations: Mapping[str, str] | None = None
    ) -> None:
        self.node_name = node_name
        self.node_labels: dict[str, str] = dict(labels or {})
        self.node_annotations: dict[str, str] = dict(annotations or {})
        self.condition: Condition | None = None
        self.changed = threading.Event()
        self.patches = 0
        self.writes: list[dict[str, dict[str, str | None]]] = []  # each metadata patch, as it would be sent
        self.events: list[RecordedEvent] = []
        self.heartbeats: list[int] = []  # the lease duration of each renewal that succeeded
        self.refused: list[Write] = []  # each write that failed, in order
        self.closed = False
        self._failing: set[Write] = set()

    # -- test helpers --------------------------------------------------------------------------

    def fail(self, *writes: Write) -> None:
        """These writes raise the API server's 503 until ``recover``."""
        self._failing.update(writes)

    def recover(self) -> None:
        self._failing.clear()

    def request_power(self, request: str | None) -> None:
        """Set (None: remove) the power request annotation and wake the loop, as the operator does."""
        if request is None:
            self.node_annotations.pop(keys.POWER_REQUEST_ANNOTATION, None)
        else:
            self.node_annotations[keys.POWER_REQUEST_ANNOTATION] = request
        self.changed.set()

    def reasons(self) -> list[str]:
        return [event.reason for event in self.events]

    # -- the Publisher seam --------------------------------------------------------------------

    def labels(self) -> dict[str, str]:
        return dict(self.node_labels)

    def annotations(self) -> dict[str, str]:
        return dict(self.node_annotations)

    def publish(self, labels: Mapping[str, str] | None, annotations: Mapping[str, str | None]) -> bool:
        self._refuse_if_failing("publish")
        label_patch = diff(self.node_labels, labels, keys.NODE_AGENT_LABELS) if labels is not None else {}
        annotation_patch = diff(self.node_annotations, annotations)
        if not label_patch and not annotation_patch:
            return False
        _apply(self.node_labels, label_patch)
        _apply(self.node_annotations, annotation_patch)
        self.writes.append({"labels": label_patch, "annotations": annotation_patch})
        self.patches += 1
        return True

    def set_condition(self, healthy: bool | None, reason: str, message: str) -> bool:
        self._refuse_if_failing("set_condition")
        condition = Condition(condition_status(healthy), reason, message)
        if condition == self.condition:
            return False
        self.condition = condition
        self.patches += 1
        return True

    def heartbeat(self, duration_s: int) -> None:
        self._refuse_if_failing("heartbeat")
        self.heartbeats.append(duration_s)

    def event(self, reason: str, message: str, warning: bool = True) -> None:
        self.events.append(RecordedEvent(reason, message, warning))

    def close(self) -> None:
        self.closed = True

    def _refuse_if_failing(self, write: Write) -> None:
        if write in self._failing:
            self.refused.append(write)
            raise ApiException(status=503, reason="Service Unavailable")


def _apply(current: dict[str, str], patch: Mapping[str, str | None]) -> None:
    """A JSON merge patch on a flat map: None removes the key."""
    for key, value in patch.items():
        if value is None:
            current.pop(key, None)
        else:
            current[key] = value


def _keeps_to_the_seam(fake: FakePublisher) -> Publisher:
    return fake  # mypy --strict fails here if the fake drifts from the Publisher protocol
