"""Find the control-plane binaries, building them with ``hack/build-tools.sh`` when missing."""

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
BUILD_SCRIPT: Final = REPO_ROOT / "hack" / "build-tools.sh"
REQUIRED: Final = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "etcd",
    "kwok",
    "kwokctl",
    "helm",
)


class ToolsError(RuntimeError):
    """The binaries are missing and could not be built; the message says what to do."""


@dataclass(frozen=True)
class Tools:
    """Paths of the control-plane binaries, all in one folder."""

    bin_dir: Path

    def path(self, name: str) -> Path:
        return self.bin_dir / name

    @property
    def kubectl(self) -> Path:
        return self.path("kubectl")

    @property
    def kwokctl(self) -> Path:
        return self.path("kwokctl")

    @property
    def helm(self) -> Path:
        return self.path("helm")

    def missing(self) -> list[str]:
        return [name for name in REQUIRED if not os.access(self.path(name), os.X_OK)]


def ensure_tools() -> Tools:
    """Return the tools, running the (cached, incremental) build script first.

    ``EGPU_TOOLS_BIN`` points at a folder of prebuilt binaries instead; nothing is built then.
    The build script prints its progress on stderr, which is passed through.
    """
    override = os.environ.get("EGPU_TOOLS_BIN")
    if override:
        tools = Tools(Path(override))
        if missing := tools.missing():
            raise ToolsError(f"EGPU_TOOLS_BIN={override} lacks {', '.join(missing)}; unset it to build them")
        return tools
    if not BUILD_SCRIPT.exists():
        raise ToolsError(f"{BUILD_SCRIPT} not found; run from a checkout of egpu-operator or set EGPU_TOOLS_BIN")
    if shutil.which("go") is None:
        raise ToolsError("Go is not installed: install Go >= 1.26 to build the local control plane")
    result = subprocess.run([str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise ToolsError(f"{BUILD_SCRIPT} failed (exit {result.returncode}); its output above says why")
    tools = Tools(Path(result.stdout.strip().splitlines()[-1]))
    if missing := tools.missing():
        raise ToolsError(f"the build finished but {', '.join(missing)} is missing from {tools.bin_dir}")
    return tools
