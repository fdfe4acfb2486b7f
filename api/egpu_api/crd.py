"""Generate the CustomResourceDefinitions in ``crds/`` from the pydantic models.

    python -m egpu_api.crd crds/      # rewrite the committed CRDs

Pydantic emits JSON Schema; Kubernetes wants a structural OpenAPI v3 schema: no ``$ref``,
no ``anyOf`` for optional fields, ``exclusiveMinimum`` as a flag, and a description on every
field (``kubectl explain`` reads them). A field without a description is an error here,
so a new field cannot ship undocumented. ``tests`` fail when ``crds/`` drifts from this.
"""

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from egpu_api import keys
from egpu_api.inference import InferenceDeploymentSpec, InferenceDeploymentStatus
from egpu_api.keys import API_GROUP, API_VERSION
from egpu_api.maintenance import GPUMaintenanceSpec, GPUMaintenanceStatus

_DROP = {"title", "discriminator"}
#: Longest label value Kubernetes accepts.
LABEL_VALUE_MAX = 63


class SchemaError(ValueError):
    """A model cannot become a structural schema (e.g. a field lacks a description)."""


def structural(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    definitions = schema.pop("$defs", {})
    return _convert(schema, definitions, model.__name__)


def _convert(schema: dict[str, Any], definitions: dict[str, Any], path: str) -> dict[str, Any]:
    if "$ref" in schema:
        target = definitions[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _convert(merged, definitions, path)
    if "anyOf" in schema and not schema.get("x-kubernetes-int-or-string"):
        options = [option for option in schema["anyOf"] if option.get("type") != "null"]
        if len(options) != 1:
            raise SchemaError(f"{path}: a union of {len(options)} types has no structural form")
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        rest.pop("default", None) if rest.get("default") is None else None
        return _convert({**options[0], **rest}, definitions, path)

    result: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP or (key == "default" and value is None):
            continue
        if key == "properties":
            result[key] = {
                name: _described(_convert(child, definitions, f"{path}.{name}"), f"{path}.{name}")
                for name, child in value.items()
            }
        elif key == "items" and isinstance(value, dict):
            result[key] = _convert(value, definitions, f"{path}[]")
        elif key == "additionalProperties" and isinstance(value, dict):
            result[key] = _convert(value, definitions, f"{path}{{}}")
        elif key == "exclusiveMinimum":
            result["minimum"], result["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            result["maximum"], result["exclusiveMaximum"] = value, True
        elif key == "const":
            result["enum"] = [value]
        else:
            result[key] = value
    if "properties" in result:
        result.setdefault("type", "object")
    if result.get("x-kubernetes-preserve-unknown-fields"):
        result.pop("additionalProperties", None)
    if result.get("x-kubernetes-int-or-string"):
        result.pop("type", None)
    return result


def _described(schema: dict[str, Any], path: str) -> dict[str, Any]:
    if not schema.get("description"):
        raise SchemaError(f"{path} has no description; add Field(description=...) so kubectl explain can show it")
    return schema


def _crd(
    kind: str,
    plural: str,
    scope: str,
    spec_model: type[BaseModel],
    status_model: type[BaseModel],
    description: str,
    short_names: list[str],
    subresources: dict[str, Any],
    columns: list[dict[str, Any]],
    name_label: str,
) -> dict[str, Any]:
    spec = structural(spec_model)
    status = structural(status_model)
    spec["description"] = spec_model.__doc__
    status["description"] = status_model.__doc__
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["egpu"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "x-kubernetes-validations": [name_rule(name_label)],
                            "properties": {
                                "apiVersion": {"type": "string", "description": f"API version: {API_GROUP}/{API_VERSION}."},
                                "kind": {"type": "string", "description": f"{kind}."},
                                "metadata": {
                                    "type": "object",
                                    "properties": {"name": {"type": "string", "description": "The object's name."}},
                                },
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def name_rule(label: str) -> dict[str, Any]:
    """Names that become label values must fit one: at most 63 characters.

    Only the root of a CRD schema may read ``metadata.name`` in CEL; the API server would
    otherwise accept the object and fail every later write that carries the name as a label."""
    return {
        "rule": f"self.metadata.name.size() <= {LABEL_VALUE_MAX}",
        "fieldPath": ".metadata.name",
        "message": f"metadata.name must be at most {LABEL_VALUE_MAX} characters: it becomes the value of the "
        f"{label} label; choose a shorter name",
    }


def inference_deployment_crd() -> dict[str, Any]:
    return _crd(
        "InferenceDeployment",
        "inferencedeployments",
        "Namespaced",
        InferenceDeploymentSpec,
        InferenceDeploymentStatus,
        "InferenceDeployment serves one model, whole on one GPU per replica, "
        "placed only where the GPU holds it and the PCIe link loads it within budget.",
        ["idep"],
        {
            "status": {},
            "scale": {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.selector",
            },
        },
        [
            {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
            {"name": "Desired", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
            {"name": "Size", "type": "string", "jsonPath": ".spec.model.size"},
            {
                "name": "Worst-Load-s",
                "type": "number",
                "jsonPath": ".status.worstLoadSeconds",
                "description": "Largest estimated model load time over the replicas",
            },
            {"name": "Placed", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Placed')].status"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        keys.DEPLOYMENT_LABEL,
    )


def gpu_maintenance_crd() -> dict[str, Any]:
    return _crd(
        "GPUMaintenance",
        "gpumaintenances",
        "Cluster",
        GPUMaintenanceSpec,
        GPUMaintenanceStatus,
        "GPUMaintenance drains one node's GPUs for service without dropping InferenceDeployment replicas: "
        "cordon, start each replacement elsewhere, evict the old pod once it is Ready, report Ready, then return the node.",
        ["gpumaint"],
        {"status": {}},
        [
            {"name": "Node", "type": "string", "jsonPath": ".spec.nodeName"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Reason", "type": "string", "jsonPath": ".spec.reason"},
            {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        keys.MAINTENANCE_LABEL,
    )


CRDS = {
    f"{API_GROUP}_inferencedeployments.yaml": inference_deployment_crd,
    f"{API_GROUP}_gpumaintenances.yaml": gpu_maintenance_crd,
}


def render(factory: Any) -> str:
    header = "# Generated by `python -m egpu_api.crd crds/` from api/egpu_api; do not edit by hand.\n"
    return header + yaml.safe_dump(factory(), sort_keys=False, width=120)


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else Path("crds")
    folder.mkdir(parents=True, exist_ok=True)
    for name, factory in CRDS.items():
        (folder / name).write_text(render(factory))
        print(f"wrote {folder / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
