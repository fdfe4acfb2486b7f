"""The agent's command line: failures a user can cause are one line and a distinct exit code."""

import shutil
from pathlib import Path

import pytest

from egpu_node_agent.cli import main


def test_missing_node_name_says_how_to_set_it(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    assert main(["run", "--backend", "none"]) == 2
    assert capsys.readouterr().err == (
        "egpu-node-agent: no node name; set NODE_NAME (downward API spec.nodeName) or pass --node-name\n"
    )


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
