"""Conditions per the Kubernetes API conventions: lastTransitionTime moves only when status does."""

from collections.abc import Mapping, Sequence
from typing import Any


def find(conditions: Sequence[Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    """The condition of type ``kind``, or None."""
    return next((condition for condition in conditions if condition.get("type") == kind), None)


def transition_time(before: Mapping[str, Any] | None, status: str, now: str) -> str:
    """The lastTransitionTime for a condition now of ``status``: the previous one's while its status
    is unchanged, else ``now``. A condition rewritten every reconcile must not look as if it just turned."""
    if before is not None and before.get("status") == status and before.get("lastTransitionTime"):
        return str(before["lastTransitionTime"])
    return now
