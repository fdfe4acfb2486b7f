"""The KWOK stages that make simulated replica pods take their model load time."""

from pathlib import Path

import pytest
import yaml

from egpu_localcluster.stages import (
    StagesError,
    controller_manager_qps,
    kwok_parallelism,
    model_load_stages,
    quiet_heartbeat_options,
)


def test_pod_ready_waits_for_the_scaled_load_estimate(tmp_path: Path) -> None:
    for name in ("pod-ready", "pod-delete", "node-initialize"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({"kind": "Stage", "metadata": {"name": name}, "spec": {}}))
    stages = model_load_stages(tmp_path, 0.1)
    assert sorted(stage["metadata"]["name"] for stage in stages) == ["node-initialize", "pod-delete", "pod-ready"]
    ready = next(stage for stage in stages if stage["metadata"]["name"] == "pod-ready")
    assert ready["spec"]["delay"] == {
        "durationMilliseconds": 0,
        "durationFrom": {
            "expressionFrom": '((.metadata.annotations["egpu-operator.io/estimated-load-seconds"] // "0" | tonumber)'
            ' * 0.1 | tostring) + "s"'
        },
    }


def test_missing_stages_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(StagesError, match=r"run hack/build-tools\.sh"):
        model_load_stages(tmp_path, 1.0)


def test_quiet_heartbeats_keep_leases_but_renew_them_rarely() -> None:
    options = quiet_heartbeat_options(1200)
    # heartbeatFactor 1: kwokctl multiplies the timings below by its default factor of 5 otherwise.
    assert options == {
        "heartbeatFactor": 1,
        "nodeLeaseDurationSeconds": 1200,
        "kubeControllerManagerNodeMonitorGracePeriodMilliseconds": 1_200_000,
        "kubeControllerManagerNodeMonitorPeriodMilliseconds": 25_000,
    }
    with pytest.raises(ValueError, match="lease_duration_s=0: use at least 40 s"):
        quiet_heartbeat_options(0)


def test_kwok_parallelism_is_a_kwok_configuration() -> None:
    config = kwok_parallelism(16)
    assert config["kind"] == "KwokConfiguration"
    assert config["options"] == {"nodeLeaseParallelism": 16, "nodePlayStageParallelism": 16, "podPlayStageParallelism": 16}
    with pytest.raises(ValueError, match="workers=0"):
        kwok_parallelism(0)


def test_controller_manager_qps_patches_only_the_controller_manager() -> None:
    assert controller_manager_qps(500) == [
        {
            "name": "kube-controller-manager",
            "extraArgs": [{"key": "kube-api-qps", "value": "500"}, {"key": "kube-api-burst", "value": "1000"}],
        }
    ]
    with pytest.raises(ValueError, match="qps=0"):
        controller_manager_qps(0)
