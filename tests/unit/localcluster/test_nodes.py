from egpu_api.fleet import load_fleet
from egpu_localcluster.nodes import fleet_manifests, node_manifest


def test_node_manifest_advertises_gpus_like_the_device_plugin_and_nfd() -> None:
    manifest = node_manifest(load_fleet().node("switch-4x-a5000"))

    assert manifest["metadata"]["name"] == "switch-4x-a5000"
    assert manifest["metadata"]["annotations"] == {"kwok.x-k8s.io/node": "fake"}
    assert manifest["metadata"]["labels"] == {
        "kubernetes.io/hostname": "switch-4x-a5000",
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        "egpu-operator.io/fleet-node": "switch-4x-a5000",
        "feature.node.kubernetes.io/pci-10de.present": "true",
    }
    assert manifest["status"]["capacity"] == {"cpu": "8", "memory": "32768Mi", "pods": "110", "nvidia.com/gpu": "4"}
    assert manifest["status"]["allocatable"] == manifest["status"]["capacity"]


def test_mig_node_advertises_one_unit_per_slice() -> None:
    manifest = node_manifest(load_fleet().node("server-a100-mig"))
    assert manifest["status"]["capacity"]["nvidia.com/gpu"] == "2"


def test_arm_host_is_labelled_arm64() -> None:
    manifest = node_manifest(load_fleet().node("pi5-rtx4090"))
    assert manifest["metadata"]["labels"]["kubernetes.io/arch"] == "arm64"


def test_fleet_becomes_one_list_with_a_node_per_entry() -> None:
    fleet = load_fleet()
    manifests = fleet_manifests(fleet)
    assert manifests["kind"] == "List"
    assert [item["metadata"]["name"] for item in manifests["items"]] == [node.name for node in fleet.nodes]
