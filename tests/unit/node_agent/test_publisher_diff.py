"""The agent's patch never names a key outside the project prefix."""

from egpu_api import keys
from egpu_node_agent.publisher import diff


def test_only_changed_project_keys_are_patched() -> None:
    current = {"egpu-operator.io/health": "ok", "egpu-operator.io/gpu-count": "1", "kubernetes.io/arch": "arm64"}
    desired = {"egpu-operator.io/health": "degraded", "egpu-operator.io/gpu-count": "1"}
    assert diff(current, desired) == {"egpu-operator.io/health": "degraded"}


def test_foreign_keys_are_never_touched_even_if_asked() -> None:
    assert diff({"kubernetes.io/arch": "arm64"}, {"kubernetes.io/arch": "amd64", "team": "x"}) == {}


def test_owned_labels_no_longer_computed_are_removed() -> None:
    current = {"egpu-operator.io/power-limit-watts": "75", "egpu-operator.io/health": "ok", "other.io/x": "1"}
    patch = diff(current, {"egpu-operator.io/health": "ok"}, keys.NODE_AGENT_LABELS)
    assert patch == {"egpu-operator.io/power-limit-watts": None}


def test_none_deletes_an_annotation_only_if_present() -> None:
    assert diff({}, {"egpu-operator.io/power-limit-status": None}) == {}
    assert diff({"egpu-operator.io/power-limit-status": "{}"}, {"egpu-operator.io/power-limit-status": None}) == {
        "egpu-operator.io/power-limit-status": None
    }


def test_steady_state_is_an_empty_patch() -> None:
    labels = {"egpu-operator.io/health": "ok", "egpu-operator.io/gpu-count": "4"}
    assert diff(labels, dict(labels), keys.NODE_AGENT_LABELS) == {}
