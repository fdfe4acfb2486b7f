"""Dependencies point inward: the operator and the tooling never import the node agent.

The demo may start agents as processes (``python -m egpu_node_agent``); that is no import.
What they share with the agent lives in ``egpu_runtime`` and ``egpu_api``.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = "egpu_node_agent"


def agent_imports(source: str) -> list[str]:
    """The modules of the agent that ``source`` imports, at any depth (lazy imports in functions count)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == FORBIDDEN]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == FORBIDDEN:
            found.append(node.module or "")
    return found


def test_the_check_sees_every_form_of_import() -> None:
    source = "import egpu_node_agent\nimport egpu_node_agent.kube as k\ndef f():\n    from egpu_node_agent.logs import x\n"
    assert agent_imports(source) == ["egpu_node_agent", "egpu_node_agent.kube", "egpu_node_agent.logs"]
    assert agent_imports("import subprocess\nsubprocess.run(['python', '-m', 'egpu_node_agent'])\n") == []


@pytest.mark.parametrize("folder", ["operator", "localcluster"])
def test_no_import_of_the_node_agent(folder: str) -> None:
    files = sorted((REPO / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}/"
    offending = {str(path.relative_to(REPO)): found for path in files if (found := agent_imports(path.read_text()))}
    assert offending == {}, "import what the agent shares from egpu_runtime or egpu_api instead"
