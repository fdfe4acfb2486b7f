"""`egpu-localcluster up --name ../../../tmp/x` once started a cluster outside its folder, which
`down` then could not find: a name that is not a DNS label is refused, one line, nothing made."""

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from egpu_localcluster.cli import CLUSTERS_DIR

pytestmark = pytest.mark.e2e


def localcluster(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "egpu_localcluster", *args], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("command", ["up", "down"])
def test_a_path_as_a_cluster_name_is_refused_and_nothing_is_made(command: str) -> None:
    escape = Path("/tmp") / f"egpu-escape-{uuid.uuid4().hex[:8]}"
    name = "../" * len(CLUSTERS_DIR.parts) + str(escape).lstrip("/")
    assert (CLUSTERS_DIR / name).resolve() == escape, "the name points outside the clusters folder"
    result = localcluster(command, "--name", name)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"egpu-localcluster: --name {name!r} is not a valid cluster name: use at most 63 lowercase letters, digits "
        "and '-', starting and ending with a letter or digit, e.g. egpu-test\n"
    )
    assert not escape.exists(), "nothing made outside the clusters folder"
