"""The agent's command line: failures a user can cause are one line and a distinct exit code."""

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from egpu_api.fleet import DEFAULT_FLEET
from egpu_node_agent.cli import _parser, main


def test_missing_node_name_says_how_to_set_it(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    assert main(["run", "--backend", "none"]) == 2
    assert capsys.readouterr().err == (
        "egpu-node-agent: no node name; set NODE_NAME (downward API spec.nodeName) or pass --node-name\n"
    )


def test_restore_power_without_a_node_says_how_to_name_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    assert main(["restore-power", "--backend", "none"]) == 2
    assert capsys.readouterr().err == "egpu-node-agent: no node name; set NODE_NAME or pass --node-name\n"


def test_restore_on_exit_takes_only_the_documented_modes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["run", "--restore-power-on-exit", "sometimes"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "argument --restore-power-on-exit: invalid choice: 'sometimes'" in error
    assert all(mode in error for mode in ("never", "uninstall", "always"))


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA driver")
def test_missing_nvml_is_one_line_and_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["labels"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("egpu-node-agent: NVML could not be initialised (")
    assert err.endswith("To run without GPUs, use --backend none\n")
    assert err.count("\n") == 1


def test_broken_profile_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "fleet.yaml"
    broken.write_text("apiVersion: egpu-operator.io/v1alpha1\nkind: FleetProfile\nmetadata: {name: x}\nnodes: []\n")
    assert main(["labels", "--backend", "fake", "--fleet", str(broken), "--node", "a"]) == 2
    assert (
        capsys.readouterr().err
        == f"egpu-node-agent: fleet profile {broken}: nodes: list should have at least 1 item after validation, not 0\n"
    )


def test_no_gpu_mode_publishes_a_zero_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["labels", "--backend", "none"]) == 0
    assert '"egpu-operator.io/gpu-count": "0"' in capsys.readouterr().out


def options(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    """Every option of the parser and its subcommands, with the command it belongs to."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((f"{name} {option}", found) for option, found in options(sub))
        elif action.option_strings:
            yield " ".join(action.option_strings), action


def test_every_option_has_help() -> None:
    undocumented = [name for name, action in options(_parser()) if not action.help]
    assert undocumented == []
    assert len(list(options(_parser()))) > 20


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"egpu-node-agent {metadata.version('egpu-operator')}\n"


def test_a_bad_log_level_is_one_sentence(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["--log-level", "bogus", "labels", "--backend", "none"]) == 2
    assert capsys.readouterr().err == (
        "egpu-node-agent: --log-level 'bogus' is not a log level; use one of debug, info, warning, error, critical\n"
    )
    monkeypatch.setenv("EGPU_LOG_LEVEL", "loud")
    assert main(["labels", "--backend", "none"]) == 2
    assert capsys.readouterr().err.startswith("egpu-node-agent: EGPU_LOG_LEVEL 'loud' is not a log level; ")
    assert main(["--log-level", "WARNING", "labels", "--backend", "none"]) == 0  # the flag wins, in any case


def test_an_unknown_fleet_node_lists_the_fleet(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["labels", "--backend", "fake", "--node-name", "pi6-rtx9090"]) == 2
    assert capsys.readouterr().err == (
        f"egpu-node-agent: fleet profile {DEFAULT_FLEET}: no node 'pi6-rtx9090'; the nodes of fleet 'edge-default' are "
        "pi5-rtx4090, x220-tesla-p4, minipc-rtx4070ti, laptop-rtx3060-tb, switch-4x-a5000, server-a100-mig, "
        "vm-h100-passthrough, vm-vgpu-a10\n"
    )


def test_the_fake_backend_needs_a_node(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--backend", "fake"]) == 2
    assert capsys.readouterr().err == "egpu-node-agent: the fake backend needs a node: pass --node-name\n"


@pytest.mark.parametrize("command", ["labels", "check"])
@pytest.mark.parametrize("flag", ["--node-name", "--node"])
def test_fake_backend_commands_leave_no_sysfs_folder(
    command: str, flag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main([command, "--backend", "fake", flag, "switch-4x-a5000"]) == 0
    assert "0000:03:00.0" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_a_reader_that_leaves_early_gets_no_traceback() -> None:
    # `egpu-node-agent labels | head -1`, made deterministic: the reader has gone before the agent writes.
    command = [sys.executable, "-m", "egpu_node_agent", "labels", "--backend", "fake", "--node-name", "pi5-rtx4090"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdout.close()
    err = process.stderr.read()
    assert process.wait(timeout=60) == 141  # as a shell reports a command ended by SIGPIPE
    assert err == b""


@pytest.mark.parametrize("rate", ["fast", "0", "-90"])
def test_a_bad_storage_rate_is_refused_in_one_line(rate: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "--backend", "none", "--node-name", "n", "--storage-read-mbps", rate])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --storage-read-mbps: {rate!r} is not a rate; give whole MB/s above 0" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "socket"),
    [
        (["--backend", "nvml"], "/var/lib/kubelet/pod-resources/kubelet.sock"),
        (["--backend", "nvml", "--pod-resources-socket="], None),  # as the chart turns it off
        (["--backend", "nvml", "--pod-resources-socket", "/run/k.sock"], "/run/k.sock"),
        (["--backend", "fake"], None),  # no kubelet knows fake GPUs
        (["--backend", "none"], None),
        (["--backend", "fake", "--pod-resources-socket", "/run/k.sock"], "/run/k.sock"),
    ],
)
def test_the_kubelet_is_asked_on_real_gpus_unless_turned_off(args: list[str], socket: str | None) -> None:
    from egpu_node_agent.cli import _assignment_source

    source = _assignment_source(_parser().parse_args(["run", *args]))
    assert (source.client.socket_path if source else None) == socket
