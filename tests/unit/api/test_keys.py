"""Label and annotation keys are a public contract: assert them literally."""

from egpu_api import keys


def test_every_project_key_lives_under_one_prefix() -> None:
    assert keys.PREFIX == "egpu-operator.io/"
    assert keys.FLEET_NODE_LABEL == "egpu-operator.io/fleet-node"
    assert f"{keys.API_GROUP}/{keys.API_VERSION}" == "egpu-operator.io/v1alpha1"


def test_keys_owned_by_other_projects_are_spelled_as_they_define_them() -> None:
    assert keys.GPU_RESOURCE == "nvidia.com/gpu"
    assert keys.NFD_NVIDIA_PCI_LABEL == "feature.node.kubernetes.io/pci-10de.present"
    assert (keys.KWOK_NODE_ANNOTATION, keys.KWOK_NODE_ANNOTATION_VALUE) == ("kwok.x-k8s.io/node", "fake")
