"""The committed CRDs are exactly what the models generate, and every field is documented."""

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from egpu_api.crd import CRDS, SchemaError, render, structural

CRDS_DIR = Path(__file__).resolve().parents[3] / "crds"


@pytest.mark.parametrize("name", sorted(CRDS))
def test_committed_crd_matches_the_models(name: str) -> None:
    committed = (CRDS_DIR / name).read_text()
    assert committed == render(CRDS[name]), f"crds/{name} is stale; run: python -m egpu_api.crd crds/"


def walk(schema: dict[str, Any], path: str = "") -> list[str]:
    missing = []
    for key, child in schema.get("properties", {}).items():
        if "description" not in child and key != "metadata":
            missing.append(f"{path}.{key}")
        missing += walk(child, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        missing += walk(schema["items"], f"{path}[]")
    return missing


def test_every_field_has_a_description() -> None:
    schema = CRDS["egpu-operator.io_inferencedeployments.yaml"]()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert walk(schema) == []


def test_a_field_without_description_is_refused() -> None:
    class Undocumented(BaseModel):
        documented: int = Field(description="fine")
        bare: int

    with pytest.raises(SchemaError, match=r"Undocumented\.bare has no description"):
        structural(Undocumented)


def test_schema_is_structural() -> None:
    text = render(CRDS["egpu-operator.io_inferencedeployments.yaml"])
    assert "$ref" not in text
    assert "type: 'null'" not in text
    assert "exclusiveMinimum: true" in text  # fractionOfDefault > 0 as a flag, not a number
