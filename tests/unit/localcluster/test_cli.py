"""The CLI's user-facing failures: one line on stderr, exit status 1, no traceback."""

import argparse
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from egpu_localcluster import cli
from egpu_localcluster.cli import main, parser
from egpu_localcluster.cluster import check_name


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


def options(command: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    for action in command._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((f"{name} {option}", found) for option, found in options(sub))
        elif action.option_strings:
            yield " ".join(action.option_strings), action


def test_every_option_has_help() -> None:
    assert [name for name, action in options(parser()) if not action.help] == []
    assert len(list(options(parser()))) > 10


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"egpu-localcluster {metadata.version('egpu-operator')}\n"


def test_down_of_a_cluster_that_does_not_exist_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "CLUSTERS_DIR", tmp_path)
    (tmp_path / "egpu" / "clusters" / "egpu").mkdir(parents=True)  # kwokctl's folder of a live cluster
    (tmp_path / "stopped" / "clusters").mkdir(parents=True)  # what 'down' leaves behind
    assert main(["down", "--name", "no-such"]) == 1
    assert capsys.readouterr().err == "egpu-localcluster: found no cluster named 'no-such' started with 'up' (running: egpu)\n"
    assert main(["down", "--name", "stopped"]) == 1
    assert "found no cluster named 'stopped'" in capsys.readouterr().err
    assert not (tmp_path / "no-such").exists()  # looking does not create its folder


@pytest.mark.parametrize(
    "name",
    ["../../../tmp/x", "a/b", "..", ".", "", "Egpu", "egpu_test", "-egpu", "egpu-", "egpu\x1b[31m", "x" * 64, "egpu test"],
)
@pytest.mark.parametrize("command", ["up", "down"])
def test_a_name_that_is_not_a_dns_label_is_refused_before_anything_is_made(
    command: str, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clusters = tmp_path / "clusters"
    monkeypatch.setattr(cli, "CLUSTERS_DIR", clusters)
    monkeypatch.setattr(cli, "ensure_tools", lambda: pytest.fail("no tools are needed to refuse a name"))
    assert main([command, f"--name={name}"]) == 1
    assert capsys.readouterr().err == (
        f"egpu-localcluster: --name {name!r} is not a valid cluster name: use at most 63 lowercase letters, digits "
        "and '-', starting and ending with a letter or digit, e.g. egpu-test\n"
    )
    assert sorted(tmp_path.rglob("*")) == [], "no folder made, inside or outside the clusters folder"


@pytest.mark.parametrize("name", ["egpu", "a", "egpu-test-2", "0", "x" * 63])
def test_dns_label_names_are_accepted(name: str) -> None:
    assert check_name(name) == name


def test_a_reader_that_leaves_early_gets_no_traceback() -> None:
    # `egpu-localcluster fleet | head -1`, made deterministic: the reader has gone before it writes.
    process = subprocess.Popen(
        [sys.executable, "-m", "egpu_localcluster", "fleet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdout.close()
    err = process.stderr.read()
    assert process.wait(timeout=60) == 141
    assert err == b""
