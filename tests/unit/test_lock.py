"""The lock files (hack/lock.sh) agree with pyproject.toml's pins and with each other."""

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$", re.MULTILINE)


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(path: Path) -> dict[str, str]:
    text = path.read_text()
    pins = {normalized(name): version for name, version in PIN.findall(text)}
    assert len(pins) == len(re.findall(r"^[A-Za-z0-9]", text, re.MULTILINE)), f"{path.name}: a requirement without ==version"
    return pins


def pinned(requirements: list[str]) -> dict[str, str]:
    return {normalized(name): version for name, version in (req.split("==") for req in requirements)}


PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_every_runtime_pin_is_locked_at_its_version() -> None:
    lock = locked(REPO / "requirements.lock")
    assert pinned(PROJECT["dependencies"]).items() <= lock.items()


def test_every_dev_pin_is_locked_at_its_version() -> None:
    lock = locked(REPO / "requirements-dev.lock")
    assert pinned(PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"]).items() <= lock.items()


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock", "images/operator.lock", "images/node-agent.lock"])
def test_every_locked_package_has_a_hash(lock: str) -> None:
    entries = re.split(r"\n(?=[A-Za-z0-9])", (REPO / lock).read_text())
    assert all("--hash=sha256:" in entry for entry in entries if PIN.match(entry)), f"{lock}: a package without --hash"


@pytest.mark.parametrize("image", ["operator", "node-agent"])
def test_an_image_installs_the_versions_the_project_locks(image: str) -> None:
    runtime = locked(REPO / "requirements.lock")
    image_lock = locked(REPO / "images" / f"{image}.lock")
    assert image_lock.items() <= runtime.items()


def test_each_image_leaves_out_what_the_other_needs() -> None:
    assert "nvidia-ml-py" not in locked(REPO / "images/operator.lock")
    assert "kopf" not in locked(REPO / "images/node-agent.lock")
