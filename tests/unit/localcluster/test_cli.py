"""The CLI's user-facing failures: one line on stderr, exit status 1, no traceback."""

from pathlib import Path

import pytest

from egpu_localcluster.cli import main


def test_fleet_prints_one_row_per_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fleet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["NODE", "HOST", "GPU"]
    assert len(out) == 1 + 11  # header + 11 GPUs (the switch host has four)
    assert any(line.startswith("x220-tesla-p4") and "Gen2 x1" in line and " 500 " in line for line in out)


def test_broken_profile_is_one_line_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "fleet.yaml"
    broken.write_text(
        "apiVersion: egpu-operator.io/v1alpha1\nkind: FleetProfile\nmetadata: {name: x}\n"
        "nodes:\n- name: a\n  host: {cpuCores: 1, memoryMib: 1024}\n  gpus: [{product: x, memoryMib: 1, power: null}]\n"
    )
    assert main(["fleet", "--fleet", str(broken)]) == 1
    err = capsys.readouterr().err
    assert err == f"egpu-localcluster: fleet profile {broken}: nodes[0] (a).gpus[0].links: is required; add it\n"


def test_missing_profile_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fleet", "--fleet", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read it (No such file or directory); check the path" in capsys.readouterr().err


def test_every_profile_problem_is_a_line_of_its_own(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "fleet.yaml"
    broken.write_text(
        "apiVersion: egpu-operator.io/v1alpha1\nkind: FleetProfile\nmetadata: {name: x}\n"
        "nodes:\n- name: a\n  host: {cpuCores: true, memoryMib: 1024}\n  gpus: [{product: x, memoryMib: 1, power: null}]\n"
    )
    assert main(["fleet", "--fleet", str(broken)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"egpu-localcluster: fleet profile {broken}: nodes[0] (a).host.cpuCores: true is a boolean, not a number; "
        "write a whole number",
        f"egpu-localcluster: fleet profile {broken}: nodes[0] (a).gpus[0].links: is required; add it",
    ]
