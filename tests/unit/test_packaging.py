"""The wheel the images are built from holds every package of the source tree.

setuptools installs only the packages ``pyproject.toml`` lists; an editable install finds the
others anyway, so a forgotten subpackage passes every local test and fails only in the image
(``ModuleNotFoundError`` in the operator's pod on kind)."""

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for top, folder in setuptools["package-dir"].items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            found.add(".".join([top, *init.parent.relative_to(root).parts]))
    assert found == set(setuptools["packages"])
