"""Label and annotation keys are a public contract: assert them literally."""

from typing import get_args

import pydantic
import pytest

from egpu_api import keys
from egpu_api.gpus import GpuMode, GpuStatus
from egpu_api.inference import GpuModeName


def test_every_project_key_lives_under_one_prefix() -> None:
    assert keys.PREFIX == "egpu-operator.io/"
    assert keys.FLEET_NODE_LABEL == "egpu-operator.io/fleet-node"
    assert f"{keys.API_GROUP}/{keys.API_VERSION}" == "egpu-operator.io/v1alpha1"


def test_keys_owned_by_other_projects_are_spelled_as_they_define_them() -> None:
    assert keys.GPU_RESOURCE == "nvidia.com/gpu"
    assert (keys.DRA_GPU_DRIVER, keys.DRA_GPU_DEVICE_CLASS) == ("gpu.nvidia.com", "gpu.nvidia.com")
    assert keys.DRA_UUID_ATTRIBUTE == "uuid"
    assert keys.DRA_DEVICE_ANNOTATION == "egpu-operator.io/dra-device"
    assert keys.NFD_NVIDIA_PCI_LABEL == "feature.node.kubernetes.io/pci-10de.present"
    assert (keys.KWOK_NODE_ANNOTATION, keys.KWOK_NODE_ANNOTATION_VALUE) == ("kwok.x-k8s.io/node", "fake")
    assert keys.CONTROLLER_REVISION_LABEL == "controller-revision-hash"
    assert (keys.COMPONENT_LABEL, keys.AGENT_COMPONENT) == ("app.kubernetes.io/component", "node-agent")


def test_keys_the_operator_writes_on_what_it_manages() -> None:
    assert keys.DEPLOYMENT_LABEL == "egpu-operator.io/inference-deployment"
    assert keys.REPLICA_LABEL == "egpu-operator.io/replica"
    assert keys.MAINTENANCE_LABEL == "egpu-operator.io/maintenance"
    assert keys.AUTO_MAINTENANCE_LABEL == "egpu-operator.io/auto-maintenance"
    assert keys.POWER_FINALIZER == "egpu-operator.io/power-limits"
    assert keys.MAINTENANCE_FINALIZER == "egpu-operator.io/maintenance"
    assert keys.ESTIMATED_LOAD_ANNOTATION == "egpu-operator.io/estimated-load-seconds"
    assert keys.POWER_OWNERS_ANNOTATION == "egpu-operator.io/power-limit-owners"


def test_keys_the_node_agent_writes_on_its_node() -> None:
    assert keys.GPUS_ANNOTATION == "egpu-operator.io/gpus"
    assert keys.POWER_STATUS_ANNOTATION == "egpu-operator.io/power-limit-status"
    assert keys.GPU_ASSIGNMENTS_ANNOTATION == "egpu-operator.io/gpu-assignments"


def test_gpu_modes_are_one_list() -> None:
    assert [mode.value for mode in GpuMode] == ["bare-metal", "passthrough", "vgpu", "vgpu-host", "mig", "mixed"]
    assert set(get_args(GpuModeName)) <= set(GpuMode), "a deployment may allow only modes that exist"


def test_mixed_is_a_node_label_value_not_a_gpus_mode() -> None:
    gpu = {"index": 0, "uuid": "GPU-1", "product": "x", "pciBusId": "0", "vramMib": 1, "health": "ok"}
    assert GpuStatus.model_validate({**gpu, "mode": "mig"}).mode is GpuMode.MIG
    with pytest.raises(pydantic.ValidationError, match="mixed is a node's label value"):
        GpuStatus.model_validate({**gpu, "mode": "mixed"})
