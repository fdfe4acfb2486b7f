"""What images/node-agent.Dockerfile leaves out, the agent does without.

The image drops the Kubernetes client's asyncio copy (``kubernetes.aio``) and aiohttp with the
packages only it needs (about 80 of 185 MB of the virtualenv); the agent must never import them.
The uninstalled packages are read from the Dockerfile itself, so the two cannot drift apart.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import kubernetes

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "images" / "node-agent.Dockerfile"


def dropped_distributions() -> list[str]:
    found = re.search(r"pip uninstall --yes (aiohttp [^\\\n&]+)", DOCKERFILE.read_text())
    assert found, "images/node-agent.Dockerfile no longer uninstalls aiohttp and its kin"
    return found.group(1).split()


def dropped_modules() -> list[str]:
    """Import names of the dropped distributions, plus the client's asyncio copy."""
    return [name.replace("-", "_") for name in dropped_distributions()] + ["kubernetes.aio"]


def test_the_dockerfile_drops_the_asyncio_client_and_aiohttp() -> None:
    assert "aiohttp" in dropped_distributions()
    assert "rm -rf /opt/egpu/lib/python3.11/site-packages/kubernetes/aio" in DOCKERFILE.read_text()


BLOCKER = """
import importlib.abc, pkgutil, sys
DROPPED = {dropped!r}
class Dropped(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if any(name == d or name.startswith(d + ".") for d in DROPPED):
            raise ImportError(f"{{name}} is not in the node-agent image")
sys.meta_path.insert(0, Dropped())
import egpu_node_agent
for module in pkgutil.walk_packages(egpu_node_agent.__path__, "egpu_node_agent."):
    if not module.name.endswith(".__main__"):  # that one runs the command line
        __import__(module.name)
import kubernetes.client, kubernetes.config, kubernetes.watch
print("ok")
"""


def test_every_agent_module_imports_without_what_the_image_drops() -> None:
    script = BLOCKER.format(dropped=dropped_modules())
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr


def test_the_synchronous_client_never_imports_what_the_image_drops() -> None:
    """Lazy imports inside functions too: every import statement of the client outside ``aio``."""
    root = Path(kubernetes.__file__).parent
    dropped = dropped_modules()
    offending = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] == "aio":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                names = [base] if node.level == 0 else ([] if base != "aio" else ["kubernetes.aio"])
            offending += [
                f"{path.relative_to(root)}: {n}" for n in names if any(n == d or n.startswith(d + ".") for d in dropped)
            ]
    assert offending == []
