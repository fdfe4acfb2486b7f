"""Names on the Kubernetes wire: the API group and the prefix of every label and annotation.

Keys are built from ``PREFIX`` here and only here, so a test can assert each key literally
and a rename is one edit.
"""

from typing import Final

API_GROUP: Final = "egpu-operator.io"
API_VERSION: Final = "v1alpha1"

#: Every label and annotation this project writes starts with this prefix.
PREFIX: Final = f"{API_GROUP}/"

#: Names the fleet-profile node a simulated (KWOK) node was created from.
FLEET_NODE_LABEL: Final = f"{PREFIX}fleet-node"

#: KWOK's own marker for nodes its controller should simulate (owned by KWOK, not us).
KWOK_NODE_ANNOTATION: Final = "kwok.x-k8s.io/node"
KWOK_NODE_ANNOTATION_VALUE: Final = "fake"

#: Label Node Feature Discovery sets on hosts with an NVIDIA PCI device (vendor 10de).
NFD_NVIDIA_PCI_LABEL: Final = "feature.node.kubernetes.io/pci-10de.present"

#: Extended resource the NVIDIA device plugin advertises, one per GPU (or MIG slice, "single" strategy).
GPU_RESOURCE: Final = "nvidia.com/gpu"
