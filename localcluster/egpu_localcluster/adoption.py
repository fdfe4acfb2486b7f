"""CRDs installed outside Helm (by the demo, or ``kubectl apply -f crds/``), marked so ``helm install`` adopts them.

Helm 3.2+ and Helm 4 take over an existing object instead of refusing it ("exists and cannot be
imported into the current release") when it carries the release's ownership marks: the label
``app.kubernetes.io/managed-by: Helm`` and the annotations ``meta.helm.sh/release-name`` and
``meta.helm.sh/release-namespace``. The demo marks its CRDs for the release docs/helm.md
installs (``egpu-operator`` in ``egpu-system``), so moving from the demo to the chart keeps every
InferenceDeployment; README.md shows the same two kubectl commands for other release names.
"""

from pathlib import Path

import yaml

from egpu_localcluster.kubectl import Kubectl

REPO = Path(__file__).resolve().parents[2]
#: The release docs/helm.md installs.
RELEASE, NAMESPACE = "egpu-operator", "egpu-system"


def crd_names(folder: Path = REPO / "crds") -> list[str]:
    return sorted(yaml.safe_load(path.read_text())["metadata"]["name"] for path in folder.glob("*.yaml"))


def mark_crds_for_helm(kubectl: Kubectl, release: str = RELEASE, namespace: str = NAMESPACE) -> list[str]:
    """Give every CRD of ``crds/`` the ownership marks of ``release`` in ``namespace``; returns their names."""
    names = crd_names()
    crds = [f"crd/{name}" for name in names]
    kubectl.run("label", "--overwrite", *crds, "app.kubernetes.io/managed-by=Helm")
    kubectl.run(
        "annotate", "--overwrite", *crds, f"meta.helm.sh/release-name={release}", f"meta.helm.sh/release-namespace={namespace}"
    )
    return names
