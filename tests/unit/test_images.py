"""The Dockerfiles in images/: one base for both, pinned by tag and digest, run as non-root."""

import re
from pathlib import Path

import pytest

IMAGES = Path(__file__).resolve().parents[2] / "images"
DOCKERFILES = sorted(IMAGES.glob("*.Dockerfile"))
PINNED = re.compile(r"^ARG BASE=python:[\d.]+-slim-\w+@sha256:[0-9a-f]{64}$", re.MULTILINE)


def test_both_images_exist() -> None:
    assert [path.name for path in DOCKERFILES] == ["node-agent.Dockerfile", "operator.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_every_stage_builds_on_the_pinned_base_and_runs_as_non_root(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert PINNED.search(text), f"{dockerfile.name}: the base must be pinned by tag and digest (ARG BASE=...@sha256:...)"
    froms = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert froms == ["${BASE}", "${BASE}"], "both stages on the one pinned base"
    assert re.findall(r"^USER (\S+)", text, re.MULTILINE)[-1] == "65532:65532"


def test_both_images_share_one_base() -> None:
    bases = {match.group(0) for path in DOCKERFILES if (match := PINNED.search(path.read_text()))}
    assert len(bases) == 1, f"the images' bases differ: {sorted(bases)}"
