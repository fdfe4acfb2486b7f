"""values.schema.json is generated from values.yaml, and a mistyped value fails naming the key."""

import json
import subprocess
import sys

import pytest

from tests.unit.chart.helm import CHART, NAMESPACE, RELEASE, REPO, helm


def template(*args: str) -> subprocess.CompletedProcess[str]:
    return helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args, check=False)


def test_schema_is_generated_from_values() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "hack" / "sync-chart-schema.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_every_object_level_is_closed() -> None:
    def walk(schema: dict[str, object], path: str) -> list[str]:
        open_objects = []
        if schema.get("type") == "object" and "additionalProperties" not in schema and "properties" in schema:
            open_objects.append(path)
        for name, child in (schema.get("properties") or {}).items():  # type: ignore[attr-defined]
            open_objects += walk(child, f"{path}.{name}")
        return open_objects

    assert walk(json.loads((CHART / "values.schema.json").read_text()), "") == []


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("bogus=1", "additional properties 'bogus' not allowed"),
        ("agent.nodeSelectr.a=b", "at '/agent': additional properties 'nodeSelectr' not allowed"),
        ("operator.image.tg=1", "at '/operator/image': additional properties 'tg' not allowed"),
        ("crds.kep=false", "at '/crds': additional properties 'kep' not allowed"),
        ("agent.backend=nvm", "at '/agent/backend'"),
        ("operator.workers=0", "at '/operator/workers'"),
        ("operator.maintenance.auto=yes", "at '/operator/maintenance/auto'"),
        ("agent.resources.request.cpu=1", "at '/agent/resources': additional properties 'request' not allowed"),
        ("tenancy.allowedPriorityClasses={High_Priority}", "at '/tenancy/allowedPriorityClasses/0'"),
        ("tenancy.allowedServiceAccounts=default", "at '/tenancy/allowedServiceAccounts'"),
        ("tenancy.allowedTolerationKeys={bad key}", "at '/tenancy/allowedTolerationKeys/0'"),
        ("tenancy.allowEphemeralVolumes=yes", "at '/tenancy/allowEphemeralVolumes'"),
        ("operator.fencePolicy.enabled=no", "at '/operator/fencePolicy/enabled'"),
    ],
)
def test_a_mistyped_value_fails_naming_it(setting: str, named: str) -> None:
    result = template("--set", setting)
    assert result.returncode != 0
    assert named in result.stderr


@pytest.mark.parametrize(
    "setting",
    [
        "agent.nodeSelector.kubernetes\\.io/hostname=gpu-1",
        "operator.podAnnotations.example\\.com/team=ml",
        "agent.resources.limits.memory=512Mi",
        "agent.tolerations=null",
        "metrics.serviceMonitor.labels.release=prometheus",
    ],
)
def test_user_keyed_maps_accept_any_key(setting: str) -> None:
    result = template("--set", setting)
    assert result.returncode == 0, result.stderr
