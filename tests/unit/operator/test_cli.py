"""The operator's command line: flags, their environment variables, and one sentence for a bad value."""

import argparse

import pytest

from egpu_operator.cli import build_config, main
from egpu_operator.config import OperatorConfig
from egpu_operator.leader import LeaderConfig
from egpu_operator.liveness import LivenessConfig


def args(**given: object) -> argparse.Namespace:
    """What ``egpu-operator run`` parses when only ``given`` flags are passed."""
    values: dict[str, object] = {
        "kubeconfig": None,
        "metrics_port": 8080,
        "log_level": None,
        "auto_maintenance": False,
        **{
            name: None
            for name in (
                "workers",
                "resync_seconds",
                "maintenance_poll_seconds",
                "max_parallel_maintenances",
                "agent_namespace",
                "shared_gpu_resources",
                "dra_drivers",
                "dra_device_class",
                "lease_ttl_seconds",
                "agent_grace_seconds",
                "probe_interval_seconds",
                "blind_after_seconds",
                "disruption_fraction",
                "agent_rollout_grace_seconds",
                "leader_election_namespace",
                "leader_election_lease_name",
                "leader_election_identity",
                "leader_lease_duration_seconds",
                "leader_renew_deadline_seconds",
                "leader_retry_period_seconds",
            )
        },
    }
    return argparse.Namespace(**{**values, **given})


def test_without_flags_or_environment_the_documented_defaults_hold() -> None:
    assert build_config(args(), {}) == OperatorConfig()
    assert OperatorConfig() == OperatorConfig(
        workers=4,
        resync_s=30.0,
        maintenance_poll_s=2.0,
        max_parallel_maintenances=1,
        auto_maintenance=False,
        agent_namespace="egpu-system",
        shared_gpu_resources=("nvidia.com/gpu.shared",),
        dra_drivers=("gpu.nvidia.com",),
        dra_device_class="gpu.nvidia.com",
        liveness=LivenessConfig(
            lease_ttl_s=40, grace_s=20, probe_interval_s=2, blind_after_s=6, disruption_fraction=0.55, rollout_grace_s=600
        ),
        metrics_port=8080,
    )


def test_every_environment_variable_the_chart_sets_is_read() -> None:
    environ = {
        "EGPU_OPERATOR_WORKERS": "7",
        "EGPU_OPERATOR_RESYNC_SECONDS": "3",
        "EGPU_OPERATOR_MAINTENANCE_POLL_SECONDS": "0.5",
        "EGPU_OPERATOR_MAX_PARALLEL_MAINTENANCES": "3",
        "EGPU_OPERATOR_AUTO_MAINTENANCE": "true",
        "EGPU_OPERATOR_AGENT_NAMESPACE": "gpu-agents",
        "EGPU_OPERATOR_SHARED_GPU_RESOURCES": "nvidia.com/gpu.shared,nvidia.com/gpu-ts",
        "EGPU_OPERATOR_DRA_DRIVERS": "gpu.nvidia.com, gpu.example.com",
        "EGPU_OPERATOR_DRA_DEVICE_CLASS": "big-gpus",
        "EGPU_OPERATOR_LEASE_TTL_SECONDS": "30",
        "EGPU_OPERATOR_AGENT_GRACE_SECONDS": "10",
        "EGPU_OPERATOR_PROBE_INTERVAL_SECONDS": "1",
        "EGPU_OPERATOR_BLIND_AFTER_SECONDS": "4",
        "EGPU_OPERATOR_DISRUPTION_FRACTION": "0.5",
        "EGPU_OPERATOR_AGENT_ROLLOUT_GRACE_SECONDS": "900",
    }
    assert build_config(args(metrics_port=0), environ) == OperatorConfig(
        workers=7,
        resync_s=3.0,
        maintenance_poll_s=0.5,
        max_parallel_maintenances=3,
        auto_maintenance=True,
        agent_namespace="gpu-agents",
        shared_gpu_resources=("nvidia.com/gpu.shared", "nvidia.com/gpu-ts"),
        dra_drivers=("gpu.nvidia.com", "gpu.example.com"),
        dra_device_class="big-gpus",
        liveness=LivenessConfig(
            lease_ttl_s=30, grace_s=10, probe_interval_s=1, blind_after_s=4, disruption_fraction=0.5, rollout_grace_s=900
        ),
        metrics_port=0,
    )


def test_an_empty_dra_driver_list_turns_dra_off() -> None:
    assert build_config(args(), {"EGPU_OPERATOR_DRA_DRIVERS": ""}) == OperatorConfig(dra_drivers=())


def test_a_flag_wins_over_its_environment_variable() -> None:
    environ = {"EGPU_OPERATOR_MAX_PARALLEL_MAINTENANCES": "3", "EGPU_OPERATOR_LEASE_TTL_SECONDS": "30"}
    config = build_config(args(max_parallel_maintenances="2", lease_ttl_seconds="50", auto_maintenance=True), environ)
    assert isinstance(config, OperatorConfig)
    assert (config.max_parallel_maintenances, config.liveness.lease_ttl_s, config.auto_maintenance) == (2, 50.0, True)


@pytest.mark.parametrize("value", ["false", "0", "no", ""])
def test_automatic_maintenance_stays_off_unless_asked_for(value: str) -> None:
    config = build_config(args(), {"EGPU_OPERATOR_AUTO_MAINTENANCE": value})
    assert isinstance(config, OperatorConfig)
    assert config.auto_maintenance is False


@pytest.mark.parametrize(
    ("argv", "environ", "sentence"),
    [
        ([], {"EGPU_OPERATOR_LEASE_TTL_SECONDS": "soon"},
         "EGPU_OPERATOR_LEASE_TTL_SECONDS (or --lease-ttl-seconds) must be a number, not 'soon'"),
        (["--workers", "two"], {}, "EGPU_OPERATOR_WORKERS (or --workers) must be a whole number, not 'two'"),
        (["--max-parallel-maintenances", "0"], {}, "max parallel maintenances must be at least 1; see egpu-operator run --help"),
        (["--blind-after-seconds", "1"], {}, "failure-safety settings: blind-after must be at least twice the probe interval"),
    ],
)  # fmt: skip
def test_a_bad_setting_is_one_sentence_and_exit_2(
    argv: list[str], environ: dict[str, str], sentence: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert main(["run", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"egpu-operator: {sentence}")
    assert err.count("\n") == 1


def test_reading_the_settings_leaves_the_environment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EGPU_OPERATOR_MAX_PARALLEL_MAINTENANCES", raising=False)
    environ: dict[str, str] = {}
    build_config(args(max_parallel_maintenances="2"), environ)
    assert environ == {}


def test_version_and_a_bad_log_level_are_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    from egpu_operator.cli import main

    with pytest.raises(SystemExit) as shown:
        main(["--version"])
    assert shown.value.code == 0
    assert capsys.readouterr().out.startswith("egpu-operator ")
    assert main(["run", "--log-level", "bogus"]) == 2
    error = capsys.readouterr().err
    assert error == "egpu-operator: --log-level 'bogus' is not a log level; use one of debug, info, warning, error, critical\n"


def test_leader_election_settings_come_from_flags_or_environment() -> None:
    environ = {
        "EGPU_OPERATOR_LEADER_ELECTION_NAMESPACE": "gpu-ops",
        "EGPU_OPERATOR_LEADER_ELECTION_LEASE_NAME": "egpu-operator",
        "EGPU_OPERATOR_LEADER_ELECTION_IDENTITY": "egpu-operator-7d9f-abcde",
        "EGPU_OPERATOR_LEADER_LEASE_DURATION_SECONDS": "6",
    }
    config = build_config(args(leader_renew_deadline_seconds="4", leader_retry_period_seconds="1"), environ)
    assert isinstance(config, OperatorConfig)
    assert config.leader == LeaderConfig("gpu-ops", "egpu-operator", "egpu-operator-7d9f-abcde", 6.0, 4.0, 1.0)


def test_leader_timing_out_of_order_is_one_sentence() -> None:
    message = build_config(args(leader_renew_deadline_seconds="20"), {})
    assert message == (
        "leader election needs 0 < retry period < renew deadline < lease duration (got 2, 20 and 15 s); "
        "see egpu-operator run --help"
    )
