"""Kubernetes Events (core/v1) as their writers record them: one new Event per occurrence, count 1."""

from collections.abc import Mapping
from typing import Any

from egpu_runtime import timestamps

#: The API server refuses longer Event messages.
MESSAGE_MAX = 1024


def involved(api_version: str, kind: str, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The ``involvedObject`` reference to an object, from its metadata."""
    reference = {"apiVersion": api_version, "kind": kind, "name": metadata["name"], "uid": metadata.get("uid")}
    if metadata.get("namespace"):
        reference["namespace"] = metadata["namespace"]
    return reference


def event(
    namespace: str,
    subject: Mapping[str, Any],
    reason: str,
    message: str,
    warning: bool,
    component: str,
    host: str | None = None,
) -> dict[str, Any]:
    """The body of an Event about ``subject`` (an ``involved`` reference), recorded in ``namespace``."""
    now = timestamps.now()
    source = {"component": component} | ({"host": host} if host else {})
    return {
        "metadata": {"generateName": f"{subject['name']}.", "namespace": namespace},
        "involvedObject": dict(subject),
        "reason": reason,
        "message": message[:MESSAGE_MAX],
        "type": "Warning" if warning else "Normal",
        "source": source,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
