"""The shared runtime helpers: timestamps, conditions, Events and logs, asserted literally."""

import json
import logging
from datetime import UTC, datetime, timedelta, timezone

import pytest

from egpu_runtime import conditions, events, logs, timestamps

NOON = datetime(2026, 11, 22, 12, 0, 5, 123456, tzinfo=UTC)


def test_timestamps_are_rfc3339_in_utc_with_a_z() -> None:
    assert timestamps.rfc3339(NOON) == "2026-11-22T12:00:05Z"
    assert timestamps.rfc3339(NOON, micro=True) == "2026-11-22T12:00:05.123456Z"
    two_hours_east = NOON.astimezone(timezone(timedelta(hours=2)))
    assert timestamps.rfc3339(two_hours_east) == "2026-11-22T12:00:05Z"
    assert timestamps.parse("2026-11-22T12:00:05.123456Z") == NOON
    assert timestamps.parse(timestamps.now()).tzinfo is not None
    with pytest.raises(ValueError, match="Invalid isoformat"):
        timestamps.parse("yesterday")


@pytest.mark.parametrize(
    ("before", "status", "expected"),
    [
        (None, "True", "NOW"),
        ({"type": "Ready", "status": "True", "lastTransitionTime": "THEN"}, "True", "THEN"),
        ({"type": "Ready", "status": "False", "lastTransitionTime": "THEN"}, "True", "NOW"),
        ({"type": "Ready", "status": "True"}, "True", "NOW"),  # written by hand without a time
    ],
)
def test_a_condition_transitions_only_when_its_status_changes(before: dict[str, str] | None, status: str, expected: str) -> None:
    assert conditions.transition_time(before, status, "NOW") == expected


def test_find_picks_a_condition_by_type() -> None:
    listed = [{"type": "Placed", "status": "True"}, {"type": "Ready", "status": "False"}]
    assert conditions.find(listed, "Ready") == {"type": "Ready", "status": "False"}
    assert conditions.find(listed, "Failed") is None


def test_an_event_references_its_object_and_is_stamped_once() -> None:
    subject = events.involved("egpu-operator.io/v1alpha1", "InferenceDeployment", {"name": "llm", "namespace": "ml", "uid": "u"})
    assert subject == {"apiVersion": "egpu-operator.io/v1alpha1", "kind": "InferenceDeployment", "name": "llm", "uid": "u",
                       "namespace": "ml"}  # fmt: skip
    body = events.event("ml", subject, "ReplicaPlaced", "x" * 2000, False, "egpu-operator")
    assert body["metadata"] == {"generateName": "llm.", "namespace": "ml"}
    assert body["involvedObject"] == subject
    assert (body["reason"], body["type"], body["count"], len(body["message"])) == ("ReplicaPlaced", "Normal", 1, 1024)
    assert body["source"] == {"component": "egpu-operator"}
    assert body["firstTimestamp"] == body["lastTimestamp"]
    timestamps.parse(body["firstTimestamp"])


def test_a_node_event_names_the_reporting_host_and_no_namespace() -> None:
    subject = events.involved("v1", "Node", {"name": "pi5", "uid": "n"})
    assert "namespace" not in subject
    body = events.event("default", subject, "GPULost", "gone", True, "egpu-node-agent", host="pi5")
    assert (body["type"], body["source"]) == ("Warning", {"component": "egpu-node-agent", "host": "pi5"})


def test_logs_are_one_json_object_per_line_with_the_extra_fields() -> None:
    record = logging.LogRecord("egpu_operator.x", logging.WARNING, __file__, 1, "eviction refused", None, None)
    record.pod = "ml/llm-0"
    entry = json.loads(logs.JsonFormatter().format(record))
    assert {key: entry[key] for key in ("level", "logger", "msg", "pod")} == {
        "level": "warning", "logger": "egpu_operator.x", "msg": "eviction refused", "pod": "ml/llm-0"
    }  # fmt: skip
    timestamps.parse(entry["ts"])
