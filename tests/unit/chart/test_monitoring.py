"""The chart's PrometheusRule and Grafana dashboard, checked with the real tools.

promtool (built from the pinned Prometheus module by ``hack/build-tools.sh promtool``) checks the
rendered rule groups and runs ``monitoring/alerts-test.yaml`` against them. Every dashboard query
is checked the same way, as a recording rule of a synthetic rule file (promtool parses rule
expressions without a server), and every metric a rule or panel names must be one the agent or
the operator really exports: the names come from their registries, not from a list here.
"""

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from egpu_node_agent.metrics import AgentMetrics
from egpu_operator.metrics import REGISTRY
from tests.unit.chart.helm import REPO, find, render

ENABLED = {"metrics.prometheusRule.enabled": "true", "metrics.grafanaDashboard.enabled": "true"}
ALERTS = {"EgpuGpuLost", "EgpuPcieLinkDowntrained", "EgpuPowerLimitNotApplied", "EgpuOperatorAbsent",
          "EgpuOperatorNotReady", "EgpuOperatorNoLeader", "EgpuOperatorConflict", "EgpuFleetDisruption", "EgpuNodeAgentDead",
          "EgpuDeploymentUnplaceable",
          "EgpuDeploymentReplicasNotReady", "EgpuMaintenanceStuck", "EgpuMaintenanceFailed",
          "EgpuMaintenanceReadyTooLong"}  # fmt: skip
#: Dashboard variables, as Grafana would expand them for "All".
VARIABLES = {"$node": ".*", "$job": ".*", "$__rate_interval": "5m"}
METRIC = re.compile(r"\b((?:egpu|process)_[a-z0-9_]+)\b")


@functools.cache
def promtool() -> Path:
    tools = subprocess.run([str(REPO / "hack" / "build-tools.sh"), "promtool"], capture_output=True, text=True, check=True)
    return Path(tools.stdout.strip()) / "promtool"


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool()), *args], capture_output=True, text=True, check=False, cwd=cwd)


def exported_names() -> set[str]:
    """Every series name the node agent and the operator can expose."""
    names: set[str] = set()
    for registry in (AgentMetrics().registry, REGISTRY):
        for family in registry.collect():
            names |= _series_names(family.name, family.type)
    return names


def _series_names(name: str, kind: str) -> set[str]:
    return {
        "counter": {f"{name}_total"},
        "histogram": {f"{name}_bucket", f"{name}_sum", f"{name}_count"},
        "info": {f"{name}_info"},
    }.get(kind, {name})


def rules_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {"groups": find(objects, "PrometheusRule")["spec"]["groups"]}


def dashboard_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    config_map = find(objects, "ConfigMap", "egpu-operator-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard: dict[str, Any] = json.loads(config_map["data"]["egpu-operator.json"])
    return dashboard


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, query with the variables expanded) of every target of every panel."""
    queries = []
    for panel in dashboard["panels"]:
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"panel {panel['title']!r}: unknown variable in {target['expr']}"
            queries.append((panel["title"], expr))
    return queries


def test_both_are_off_by_default() -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in render()}
    assert not any(kind == "PrometheusRule" for kind, _ in kinds)
    assert ("ConfigMap", "egpu-operator-dashboard") not in kinds


def test_the_rendered_rules_pass_promtool_check_and_their_unit_tests(tmp_path: Path) -> None:
    rules = rules_of(render({**ENABLED, "metrics.prometheusRule.labels.release": "kube-prometheus-stack"}))
    assert {rule["alert"] for group in rules["groups"] for rule in group["rules"]} == ALERTS
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    checked = run_promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout

    shutil.copy(Path(__file__).parent / "monitoring" / "alerts-test.yaml", tmp_path / "alerts-test.yaml")
    tested = run_promtool("test", "rules", "alerts-test.yaml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_broken_rule_fails_promtool(tmp_path: Path) -> None:
    """The check above can fail: promtool rejects a query that does not parse."""
    broken = {"groups": [{"name": "broken", "rules": [{"alert": "Broken", "expr": "sum(egpu_gpu_healthy"}]}]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(broken))
    assert run_promtool("check", "rules", "rules.yaml", cwd=tmp_path).returncode != 0


def test_the_rules_name_only_metrics_that_exist() -> None:
    exported = exported_names()
    rules = rules_of(render(ENABLED))
    for group in rules["groups"]:
        for rule in group["rules"]:
            named = set(METRIC.findall(rule["expr"]))
            assert named, f"{rule['alert']} names no metric"
            assert named <= exported, f"{rule['alert']} names metrics nobody exports: {named - exported}"


def test_every_dashboard_query_parses_and_names_metrics_that_exist(tmp_path: Path) -> None:
    dashboard = dashboard_of(render(ENABLED))
    assert dashboard["uid"] == "egpu-operator"
    queries = panel_queries(dashboard)
    exported = exported_names()
    for title, expr in queries:
        named = set(METRIC.findall(expr))
        assert named, f"panel {title!r} names no metric: {expr}"
        assert named <= exported, f"panel {title!r} names metrics nobody exports: {named - exported}"
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert set(METRIC.findall(variable["definition"])) <= exported, variable["definition"]
    synthetic = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"egpu:dashboard_query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)],
            }
        ]
    }
    (tmp_path / "dashboard-queries.yaml").write_text(yaml.safe_dump(synthetic))
    checked = run_promtool("check", "rules", "dashboard-queries.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(queries)} rules found" in checked.stdout


def test_the_dashboard_can_go_to_grafanas_namespace_and_folder() -> None:
    values = {**ENABLED, "metrics.grafanaDashboard.namespace": "monitoring", "metrics.grafanaDashboard.folder": "GPUs"}
    config_map = find(render(values), "ConfigMap", "egpu-operator-dashboard")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "GPUs"}


def test_the_registries_used_here_are_real() -> None:
    """exported_names reads the real registries: a name the code does not export is not in it."""
    assert "egpu_gpu_health" in exported_names()
    assert "egpu_operator_deployment_infeasible" in exported_names()
    assert "egpu_gpu_made_up" not in exported_names()
    assert isinstance(REGISTRY, CollectorRegistry)


def test_every_alert_fires_in_a_rule_test() -> None:
    cases = yaml.safe_load((Path(__file__).parent / "monitoring" / "alerts-test.yaml").read_text())["tests"]
    fired = {case["alertname"] for test in cases for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert fired == ALERTS


def test_every_operator_alert_has_a_runbook_section_in_docs_alerts_md() -> None:
    """runbook_url points at a heading of docs/alerts.md (GitHub's anchor: the heading, lower-cased)."""
    anchors = {
        line.removeprefix("## ").strip().lower()
        for line in (REPO / "docs" / "alerts.md").read_text().splitlines()
        if line.startswith("## ")
    }
    prefix = "https://github.com/egpu-operator/egpu-operator/blob/main/docs/alerts.md#"
    for group in rules_of(render(ENABLED))["groups"]:
        for rule in group["rules"]:
            url = rule["annotations"].get("runbook_url")
            if group["name"] == "egpu-operator.gpus" and url is None:
                continue  # the GPU alerts say what to do in their description
            assert url == prefix + rule["alert"].lower(), rule["alert"]
            assert rule["alert"].lower() in anchors, f"docs/alerts.md has no section ## {rule['alert']}"
