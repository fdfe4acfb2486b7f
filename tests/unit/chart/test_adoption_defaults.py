"""Chart defaults a platform team expects: operator off GPU nodes, a node-critical agent, images
pinned by digest, a `helm test` pod that pulls nothing new, and NOTES with full URLs."""

import http.server
import os
import socketserver
import subprocess
import sys
import threading
from typing import Any

import pytest

from tests.unit.chart.helm import CHART, NAMESPACE, RELEASE, find, helm, helm_major, render

DIGEST = "sha256:" + "ab" * 32


def pod_spec(kind: str, values: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = find(render(values), kind)["spec"]["template"]["spec"]
    return spec


def test_the_operator_prefers_nodes_without_gpus() -> None:
    preferred = pod_spec("Deployment")["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert [term["preference"]["matchExpressions"] for term in preferred] == [
        [{"key": "egpu-operator.io/gpu-count", "operator": "DoesNotExist"}],
        [{"key": "egpu-operator.io/gpu-count", "operator": "In", "values": ["0"]}],
    ]
    assert all(term["weight"] == 100 for term in preferred)
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in pod_spec("Deployment")["affinity"]["nodeAffinity"]


def test_the_default_affinity_can_be_dropped() -> None:
    objects = render(None, "--set-json", 'operator.affinity={"nodeAffinity":null}')
    assert list(find(objects, "Deployment")["spec"]["template"]["spec"]["affinity"]) == ["podAntiAffinity"]
    objects = render({"operator.podAntiAffinity": "none"}, "--set-json", 'operator.affinity={"nodeAffinity":null}')
    assert "affinity" not in find(objects, "Deployment")["spec"]["template"]["spec"]


def test_the_agent_is_system_node_critical_by_default_and_configurable() -> None:
    assert pod_spec("DaemonSet")["priorityClassName"] == "system-node-critical"
    assert "priorityClassName" not in pod_spec("DaemonSet", {"agent.priorityClassName": ""})


def test_images_are_pinned_by_digest_when_one_is_given() -> None:
    assert pod_spec("Deployment")["containers"][0]["image"] == "ghcr.io/egpu-operator/egpu-operator:0.1.0"
    pinned = {"operator.image.digest": DIGEST, "agent.image.digest": DIGEST, "operator.image.tag": "0.1.0"}
    assert pod_spec("Deployment", pinned)["containers"][0]["image"] == f"ghcr.io/egpu-operator/egpu-operator@{DIGEST}"
    assert pod_spec("DaemonSet", pinned)["containers"][0]["image"] == f"ghcr.io/egpu-operator/egpu-node-agent@{DIGEST}"


def test_a_malformed_digest_is_refused_naming_the_value() -> None:
    refused = helm("template", RELEASE, str(CHART), "--set", "operator.image.digest=latest", check=False)
    assert refused.returncode != 0
    assert "/operator/image/digest" in refused.stderr


def test_helm_test_pod_asks_the_operator_through_its_service_with_the_operators_image() -> None:
    pod = find(render(), "Pod", "egpu-operator-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    [container] = pod["spec"]["containers"]
    assert container["image"] == "ghcr.io/egpu-operator/egpu-operator:0.1.0"
    script = container["command"][2]
    # The Service's cluster IP from the service-link environment, not cluster DNS.
    assert pod["spec"]["enableServiceLinks"] is True
    assert 'os.environ.get("EGPU_OPERATOR_METRICS_SERVICE_HOST")' in script
    assert 'f"http://{host}:8080"' in script
    assert "/readyz" in script
    assert "egpu_operator_build_info" in script
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}

    # Scheduled like the operator (a pod placed on a node that runs no containers would never finish).
    # (Its node preference, not the operator pods' spreading among themselves.)
    assert pod["spec"]["affinity"] == {"nodeAffinity": pod_spec("Deployment")["affinity"]["nodeAffinity"]}
    pinned = find(render(None, "--set-json", 'operator.nodeSelector={"pool": "system"}'), "Pod", "egpu-operator-test")
    assert pinned["spec"]["nodeSelector"] == {"pool": "system"}
    other = find(render({"tests.image.repository": "registry.example/python", "tests.image.digest": DIGEST}), "Pod")
    assert other["spec"]["containers"][0]["image"] == f"registry.example/python@{DIGEST}"
    follows = find(render({"operator.image.digest": DIGEST}), "Pod")
    assert follows["spec"]["containers"][0]["image"] == f"ghcr.io/egpu-operator/egpu-operator@{DIGEST}"


@pytest.mark.skipif(helm_major() == 3, reason="Helm 3's install --dry-run=client assumes Kubernetes 1.20, below kubeVersion")
def test_notes_print_full_urls() -> None:
    notes = helm("install", "--dry-run=client", RELEASE, str(CHART), "--namespace", NAMESPACE).stdout
    assert f"http://egpu-operator-metrics.{NAMESPACE}.svc:8080/metrics" in notes
    assert f"http://egpu-operator-metrics.{NAMESPACE}.svc:8080/healthz" in notes
    assert "https://github.com/egpu-operator/egpu-operator/blob/main/docs/helm.md" in notes
    assert f"helm test {RELEASE} -n {NAMESPACE}" in notes


class _Operator(http.server.BaseHTTPRequestHandler):
    """Answers as the operator's metrics endpoint does, or without the build-info metric."""

    metrics = b"# TYPE egpu_operator_build_info gauge\negpu_operator_build_info 1\n"

    def do_GET(self) -> None:
        body = b"ok" if self.path == "/readyz" else self.metrics
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("has_build_info", [True, False])
def test_the_helm_test_script_asks_the_service_from_its_environment(has_build_info: bool) -> None:
    """The rendered script, run as the test pod would run it, against a stand-in for the Service's
    backend: it passes only when /readyz answers and /metrics has the operator's build info."""
    handler = type("Handler", (_Operator,), {} if has_build_info else {"metrics": b"other_metric 1\n"})
    with socketserver.TCPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
        pod = find(render({"operator.metricsPort": str(port)}), "Pod", "egpu-operator-test")
        script = pod["spec"]["containers"][0]["command"][2]
        env = {"PATH": os.environ["PATH"], "EGPU_OPERATOR_METRICS_SERVICE_HOST": "127.0.0.1"}
        ran = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30, check=False)
        missing = subprocess.run([sys.executable, "-c", script], env={"PATH": os.environ["PATH"]}, capture_output=True,
                                 text=True, timeout=30, check=False)  # fmt: skip
        server.shutdown()
    if has_build_info:
        assert ran.returncode == 0, ran.stderr
        said = f"egpu-operator-metrics (http://127.0.0.1:{port}): /readyz answered 200; /metrics has egpu_operator_build_info"
        assert ran.stdout.strip() == said
    else:
        assert (ran.returncode, ran.stderr.strip()) == (1, f"http://127.0.0.1:{port}/metrics has no egpu_operator_build_info")
    assert missing.returncode == 1
    assert "no EGPU_OPERATOR_METRICS_SERVICE_HOST in the environment" in missing.stderr
