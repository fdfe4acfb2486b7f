"""The chart passes ``helm lint --strict`` with its defaults and with every optional part switched on."""

import pytest

from tests.unit.chart.helm import CHART, helm, set_args


@pytest.mark.parametrize(
    "values",
    [
        {},
        {
            "metrics.serviceMonitor.enabled": "true",
            "agent.powerActuation.enabled": "true",
            "agent.namespace": "egpu-agents",
            "agent.createNamespace": "true",
            "crds.keep": "false",
        },
        {"agent.backend": "fake", "agent.fleetProfile": "nodes: []", "agent.nvidia.runtimeClassName": ""},
        {"agent.enabled": "false", "crds.enabled": "false", "tenancy.policy.enabled": "false"},
    ],
    ids=["defaults", "everything-on", "fake-backend", "operator-only"],
)
def test_lint_strict(values: dict[str, str]) -> None:
    result = helm("lint", "--strict", str(CHART), *set_args(values), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
