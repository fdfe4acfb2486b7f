#!/usr/bin/env python3
"""Generate charts/egpu-operator/values.schema.json from the chart's values.yaml.

    python hack/sync-chart-schema.py           # rewrite values.schema.json
    python hack/sync-chart-schema.py --check   # exit 1 if it is stale (tests, CI)

Types come from the defaults in values.yaml; every object gets ``additionalProperties: false``,
so a mistyped ``--set`` fails the install naming the key. The few values that are not plain
settings are declared below: maps whose keys are the user's (labels, annotations, node
selectors), Kubernetes objects passed through as they are (affinity, tolerations, resource
quantities), lists of object names, and the allowed values of enumerations.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "egpu-operator"
VALUES, SCHEMA = CHART / "values.yaml", CHART / "values.schema.json"

STRING_MAP: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
QUANTITIES: dict[str, Any] = {"type": "object", "additionalProperties": {"type": ["string", "integer", "number"]}}
LOG_LEVEL: dict[str, Any] = {"type": "string", "enum": ["debug", "info", "warning", "error"]}
PORT: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 65535}
IMAGE_PULL_POLICY: dict[str, Any] = {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]}
#: An image digest as registries print it, or empty.
DIGEST: dict[str, Any] = {"type": "string", "pattern": "^(sha256:[a-f0-9]{64})?$"}
#: Object names (DNS subdomains); the pattern also keeps them safe to quote inside CEL strings.
NAMES: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string", "maxLength": 253, "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
    "uniqueItems": True,
}
#: Taint keys (a label key: an optional DNS-subdomain prefix and a name), never empty.
TAINT_KEYS: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "string",
        "maxLength": 316,
        "pattern": "^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
    },
    "uniqueItems": True,
}
#: Extended resource names (a domain prefix and a name, as the device plugin advertises them); safe in CEL strings.
RESOURCE_NAMES: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "string",
        "maxLength": 316,
        "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
    },
    "uniqueItems": True,
}
#: Token audiences (often URLs); no quotes or backslashes, so they are safe inside CEL strings.
AUDIENCES: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string", "minLength": 1, "maxLength": 1024, "pattern": "^[^'\"\\\\\\s]+$"},
    "uniqueItems": True,
}

#: Keys (the last part of a path) whose values are maps of the user's own keys.
STRING_MAP_KEYS = frozenset({"commonLabels", "podAnnotations", "podLabels", "nodeSelector", "labels"})
#: Exact paths with a schema of their own.
DECLARED: dict[str, dict[str, Any]] = {
    "imagePullSecrets": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
            "additionalProperties": False,
        },
    },
    "operator.image.pullPolicy": IMAGE_PULL_POLICY,
    "agent.image.pullPolicy": IMAGE_PULL_POLICY,
    "operator.image.digest": DIGEST,
    "agent.image.digest": DIGEST,
    "tests.image.digest": DIGEST,
    "operator.workers": {"type": "integer", "minimum": 1},
    "operator.replicas": {"type": "integer", "minimum": 1},
    "operator.podAntiAffinity": {"type": "string", "enum": ["preferred", "required", "none"]},
    "operator.leaderElection.leaseDurationSeconds": {"type": "number", "exclusiveMinimum": 0},
    "operator.leaderElection.renewDeadlineSeconds": {"type": "number", "exclusiveMinimum": 0},
    "operator.leaderElection.retryPeriodSeconds": {"type": "number", "exclusiveMinimum": 0},
    "operator.maintenance.maxParallel": {"type": "integer", "minimum": 1},
    "operator.logLevel": LOG_LEVEL,
    "agent.logLevel": LOG_LEVEL,
    "operator.metricsPort": PORT,
    "agent.metricsPort": PORT,
    "agent.backend": {"type": "string", "enum": ["nvml", "fake", "none"]},
    # A namespace name (a DNS label), or empty for the release namespace.
    "agent.namespace": {"type": "string", "maxLength": 63, "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$"},
    "agent.powerActuation.restoreDefaultsOnExit": {"type": "string", "enum": ["never", "uninstall", "always"]},
    "agent.pollIntervalSeconds": {"type": "number", "exclusiveMinimum": 0},
    "agent.maxUnavailable": {"type": ["integer", "string"]},
    "operator.gpuResources.draDrivers": NAMES,
    "operator.gpuResources.sharedGpuResources": RESOURCE_NAMES,
    "agent.maxSurge": {"type": ["integer", "string"]},
    "tenancy.allowedServiceAccounts": NAMES,
    "tenancy.allowedPriorityClasses": NAMES,
    "tenancy.allowedRuntimeClasses": NAMES,
    "tenancy.allowedCSIDrivers": NAMES,
    "tenancy.allowedTolerationKeys": TAINT_KEYS,
    "tenancy.allowedTokenAudiences": AUDIENCES,
    # Kubernetes types: the API server validates them; here only their outer shape.
    "operator.affinity": {"type": "object"},
    "agent.affinity": {"type": "object"},
    "operator.tolerations": {"type": "array", "items": {"type": "object"}},
    "agent.tolerations": {"type": "array", "items": {"type": "object"}},
    "metrics.serviceMonitor.interval": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"},
}
RESOURCES: dict[str, Any] = {
    "type": "object",
    "properties": {"requests": QUANTITIES, "limits": QUANTITIES},
    "additionalProperties": False,
}


def infer(value: Any, path: str) -> dict[str, Any]:
    key = path.rsplit(".", 1)[-1]
    if path in DECLARED:
        return DECLARED[path]
    if key in STRING_MAP_KEYS:
        return STRING_MAP
    if key == "resources":
        return RESOURCES
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, dict):
        return {
            "type": "object",
            "properties": {name: infer(child, f"{path}.{name}" if path else name) for name, child in value.items()},
            "additionalProperties": False,
        }
    raise SystemExit(f"values.yaml: {path} has no declared schema; add it to DECLARED in {Path(__file__).name}")


def schema() -> str:
    document = {"$schema": "http://json-schema.org/draft-07/schema#", **infer(yaml.safe_load(VALUES.read_text()), "")}
    return json.dumps(document, indent=2) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if values.schema.json is stale")
    args = parser.parse_args(argv)
    wanted = schema()
    if args.check:
        if not SCHEMA.exists() or SCHEMA.read_text() != wanted:
            print("charts/egpu-operator/values.schema.json is stale; run: python hack/sync-chart-schema.py", file=sys.stderr)
            return 1
        return 0
    SCHEMA.write_text(wanted)
    print(f"wrote {SCHEMA}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
