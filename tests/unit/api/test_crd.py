"""The committed CRDs are exactly what the models generate, and every field is documented."""

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field, ValidationError

from egpu_api.crd import CRDS, SchemaError, render, structural
from egpu_api.inference import InferenceDeploymentSpec

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


def root(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = CRDS[name]()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


INFERENCE = "egpu-operator.io_inferencedeployments.yaml"
MAINTENANCE = "egpu-operator.io_gpumaintenances.yaml"


@pytest.mark.parametrize(
    ("name", "label"),
    [(INFERENCE, "egpu-operator.io/inference-deployment"), (MAINTENANCE, "egpu-operator.io/maintenance")],
)
def test_names_are_limited_to_a_label_value(name: str, label: str) -> None:
    assert root(name)["x-kubernetes-validations"] == [
        {
            "rule": "self.metadata.name.size() <= 63",
            "fieldPath": ".metadata.name",
            "message": f"metadata.name must be at most 63 characters: it becomes the value of the {label} label; "
            "choose a shorter name",
        }
    ]


def test_every_maintenance_field_has_a_description() -> None:
    assert walk(root(MAINTENANCE)) == []


def template() -> dict[str, Any]:
    schema: dict[str, Any] = root(INFERENCE)["properties"]["spec"]["properties"]["template"]
    return schema


def nodes(schema: dict[str, Any], path: str = "template") -> list[tuple[str, dict[str, Any]]]:
    """Every schema node under ``schema`` with its path, items written as ``[]``."""
    found = [(path, schema)]
    for key, child in schema.get("properties", {}).items():
        found += nodes(child, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        found += nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        found += nodes(schema["additionalProperties"], f"{path}{{}}")
    return found


def rules_at(path: str) -> list[str]:
    schema = dict(nodes(template()))[path]
    return [rule["rule"] for rule in schema.get("x-kubernetes-validations", [])]


def test_the_template_keeps_every_field_it_does_not_check() -> None:
    preserved = [path for path, node in nodes(template()) if node.get("type") == "object" and "properties" in node]
    assert "template.spec.containers[].securityContext" in preserved
    for path in preserved:
        assert dict(nodes(template()))[path].get("x-kubernetes-preserve-unknown-fields") is True, path


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("template.spec.nodeName", "self == ''"),
        ("template.spec.nodeSelector", "self.size() == 0"),
        ("template.spec.hostNetwork", "!self"),
        ("template.spec.hostPID", "!self"),
        ("template.spec.hostIPC", "!self"),
        ("template.spec.volumes[]", "!has(self.hostPath)"),
        ("template.spec.securityContext.windowsOptions.hostProcess", "!self"),
        ("template.spec.securityContext.seccompProfile.type", "self != 'Unconfined'"),
        ("template.spec.securityContext.appArmorProfile.type", "self != 'Unconfined'"),
        ("template.spec.securityContext.seLinuxOptions.user", "self == ''"),
        ("template.spec.securityContext.seLinuxOptions.role", "self == ''"),
        *(
            (f"template.spec.{kind}[].{field}", rule)
            for kind in ("containers", "initContainers", "ephemeralContainers")
            for field, rule in [
                ("securityContext.privileged", "!self"),
                ("securityContext.procMount", "self == 'Default'"),
                ("securityContext.windowsOptions.hostProcess", "!self"),
                ("securityContext.seccompProfile.type", "self != 'Unconfined'"),
                ("securityContext.appArmorProfile.type", "self != 'Unconfined'"),
                ("securityContext.seLinuxOptions.user", "self == ''"),
                ("ports[].hostPort", "self == 0"),
                ("startupProbe.httpGet.host", "self == ''"),
                ("lifecycle.preStop.tcpSocket.host", "self == ''"),
            ]
        ),
    ],
)
def test_each_escalation_has_a_rule_on_its_field(path: str, rule: str) -> None:
    assert rules_at(path) == [rule]


def test_added_capabilities_are_limited_to_the_baseline_set() -> None:
    (rule,) = rules_at("template.spec.containers[].securityContext.capabilities.add")
    assert rule.startswith("self.all(c, c in ['AUDIT_WRITE', 'CHOWN', ")
    assert "'NET_BIND_SERVICE'" in rule
    for beyond in ("SYS_ADMIN", "NET_ADMIN", "'ALL'"):
        assert beyond not in rule


def test_every_message_names_the_field_path_it_judges() -> None:
    judged = 0
    for path, node in nodes(template()):
        for validation in node.get("x-kubernetes-validations", []):
            field = f"spec.{path}{validation.get('fieldPath', '')}"
            assert validation["message"].startswith(f"{field} "), (field, validation["message"])
            judged += 1
    assert judged > 40


def test_lists_and_compared_strings_are_bounded_for_the_cel_cost_budget() -> None:
    for path, node in nodes(template()):
        if node.get("type") == "array":
            assert "maxItems" in node, path
        if node.get("type") == "string" and node.get("x-kubernetes-validations"):
            assert "maxLength" in node, path
    # The capability rule compares the items, which carry no rule of their own.
    assert dict(nodes(template()))["template.spec.containers[].securityContext.capabilities.add[]"]["maxLength"] == 64


def test_the_admission_policy_fields_are_declared_without_rules() -> None:
    # The chart's ValidatingAdmissionPolicy checks these against allow-lists; CEL sees only declared fields.
    for field in ("serviceAccountName", "serviceAccount", "priorityClassName"):
        schema = dict(nodes(template()))[f"template.spec.{field}"]
        assert schema["type"] == "string"
        assert "x-kubernetes-validations" not in schema


@pytest.mark.parametrize("example", sorted((CRDS_DIR.parent / "examples").glob("*.yaml")), ids=lambda path: path.stem)
def test_the_operator_still_parses_every_example_with_its_template_untouched(example: Path) -> None:
    document = yaml.safe_load(example.read_text())
    spec = InferenceDeploymentSpec.model_validate(document["spec"])
    assert spec.template == document["spec"]["template"]


def model_schema() -> dict[str, Any]:
    spec = CRDS["egpu-operator.io_inferencedeployments.yaml"]()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return spec["properties"]["spec"]["properties"]["model"]


@pytest.mark.parametrize("field", ["size", "vramOverhead"])
def test_quantities_are_checked_by_cel_at_their_field_without_a_regular_expression(field: str) -> None:
    # An OpenAPI pattern's error prints the expression; the CEL rules print a sentence ("use 13G or 13Gi").
    assert "pattern" not in model_schema()["properties"][field]
    assert model_schema()["properties"][field]["maxLength"] == 64  # bounds the rules' CEL cost
    rules = [rule for rule in model_schema()["x-kubernetes-validations"] if rule["fieldPath"] == f".{field}"]
    assert len(rules) == 3
    assert f"isQuantity(string(self.{field}))" in rules[0]["rule"]
    assert " is not a Kubernetes quantity: use " in rules[0]["messageExpression"]
    # The sign and whole-bytes rules run only on a well-formed quantity, so a malformed one gets one message.
    assert f"!isQuantity(string(self.{field})) || " in rules[1]["rule"]
    assert rules[2]["rule"].endswith(f"!isQuantity(string(self.{field})) || quantity(string(self.{field})).isInteger()")


def test_zero_replicas_are_allowed_whatever_the_disruption_budget() -> None:
    spec = CRDS["egpu-operator.io_inferencedeployments.yaml"]()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    (rule,) = spec["properties"]["spec"]["x-kubernetes-validations"]
    assert rule["rule"] == "!has(self.disruption) || self.replicas == 0 || self.disruption.minAvailable <= self.replicas"


def test_model_name_refuses_control_characters_in_the_crd_and_the_model() -> None:
    [rule] = [rule for rule in model_schema()["x-kubernetes-validations"] if rule["fieldPath"] == ".name"]
    assert rule["rule"] == r"!self.name.matches(r'\p{Cc}')"
    assert rule["message"].startswith("model.name must not contain control characters")
    assert model_schema()["properties"]["name"]["maxLength"] == 253  # bounds the rule's CEL cost


@pytest.mark.parametrize(
    ("name", "accepted"),
    [
        ("llama-3.1-8b-instruct", True),
        ("Llama 3.1 8B Instruct (Q4_K_M)", True),
        ("模型-名", True),
        ("a\nb", False),
        ("a\tb", False),
        ("evil\x1b[2J", False),
        ("del\x7f", False),
        ("c1\x9b31m", False),
        ("nul\x00", False),
    ],
)
def test_model_names_are_printable_text(name: str, accepted: bool) -> None:
    spec = {"model": {"name": name, "size": "1Gi"}, "placement": {"maxLoadSeconds": 10}, "template": {}}
    if accepted:
        assert InferenceDeploymentSpec.model_validate(spec).model.name == name
    else:
        with pytest.raises(ValidationError, match="must not contain control characters") as raised:
            InferenceDeploymentSpec.model_validate(spec)
        assert raised.value.errors()[0]["loc"] == ("model", "name")
