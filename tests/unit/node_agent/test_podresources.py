"""The kubelet PodResources client: the protobuf reader on hand-built bytes, the device-id mapping,
and the gRPC call against a real gRPC server on a unix socket."""

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from egpu_node_agent.podresources import (
    ContainerDevices,
    ContainerResources,
    PodResources,
    PodResourcesClient,
    PodResourcesError,
    PodResourcesSource,
    decode_list_response,
    gpu_assignments,
)

# ListPodResourcesResponse with two pods, spelled out byte by byte. A tag byte is
# (field number << 3) | wire type; 0x0a = field 1, 0x12 = field 2, 0x1a = field 3, all wire type 2
# (length-delimited), each followed by the length of what it holds.
HAND_BUILT = (
    b"\x0a\x38"  # pod_resources (56 bytes)
    b"\x0a\x05llm-0"  # . name
    b"\x12\x02ai"  # . namespace
    b"\x1a\x2b"  # . containers (43 bytes)
    b"\x0a\x06server"  # . . name
    b"\x12\x1d"  # . . devices (29 bytes)
    b"\x0a\x0envidia.com/gpu"  # . . . resource_name
    b"\x12\x05GPU-b"  # . . . device_ids
    b"\x1a\x04\x0a\x02\x08\x00"  # . . . topology { nodes { ID: 0 } }: read past
    b"\x1a\x02\x02\x03"  # . . cpu_ids [2, 3], packed: read past
    b"\x0a\x17"  # pod_resources (23 bytes)
    b"\x0a\x03web"  # . name
    b"\x12\x07default"  # . namespace
    b"\x1a\x07\x0a\x05nginx"  # . containers { name: "nginx" }, no devices
)


def test_a_hand_built_reply_decodes_to_pods_containers_and_devices() -> None:
    assert decode_list_response(HAND_BUILT) == [
        PodResources("llm-0", "ai", (ContainerResources("server", (ContainerDevices("nvidia.com/gpu", ("GPU-b",)),)),)),
        PodResources("web", "default", (ContainerResources("nginx", ()),)),
    ]


def test_fields_of_every_wire_type_it_does_not_read_are_skipped() -> None:
    pod = (
        b"\x08\x96\x01"  # field 1 as a varint (150): not what name is, skipped by its wire type
        b"\x0a\x01p"  # name
        b"\x79" + bytes(8)  # field 15, fixed64
        + b"\x7d" + bytes(4)  # field 15, fixed32
        + b"\x12\x01n"  # namespace
    )  # fmt: skip
    assert decode_list_response(b"\x0a" + bytes([len(pod)]) + pod + b"\x10\x01") == [PodResources("p", "n", ())]


def test_an_empty_reply_is_no_pods() -> None:
    assert decode_list_response(b"") == []


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (b"\x0a\x05abc", "cut off inside a field"),
        (b"\x0a", "cut off inside a number"),
        (b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "longer than 64 bits"),
        (b"\x0b", "unknown wire type 3"),
        (b"\x02\x00", "field numbered 0"),
        (b"\x0a\x03\x0a\x01\xff", "not UTF-8"),
        (b"\x79\x00\x00", "cut off inside a field"),
    ],
)
def test_a_malformed_reply_is_one_clear_error(reply: bytes, problem: str) -> None:
    with pytest.raises(PodResourcesError, match=problem):
        decode_list_response(reply)


def pod(namespace: str, name: str, *devices: tuple[str, tuple[str, ...]]) -> PodResources:
    return PodResources(name, namespace, (ContainerResources("c", tuple(ContainerDevices(r, ids) for r, ids in devices)),))


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        ([pod("ai", "a", ("nvidia.com/gpu", ("GPU-1",)))], {"ai/a": ["GPU-1"]}),
        # Time-slicing replicas name their GPU with "::<n>"; two replicas of one GPU are that GPU once.
        ([pod("ai", "a", ("nvidia.com/gpu", ("GPU-1::3", "GPU-1::0")))], {"ai/a": ["GPU-1"]}),
        ([pod("ai", "a", ("nvidia.com/gpu", ("MIG-7",)))], {"ai/a": ["MIG-7"]}),
        ([pod("ai", "a", ("nvidia.com/gpu", ("GPU-2", "GPU-1")))], {"ai/a": ["GPU-1", "GPU-2"]}),
        # Other resources and pods without devices are not GPU assignments.
        ([pod("ai", "a", ("example.com/fpga", ("f0",))), pod("ai", "b")], {}),
        (
            [
                pod("ai", "a", ("example.com/fpga", ("f0",)), ("nvidia.com/gpu", ("GPU-1",))),
                pod("x", "a", ("nvidia.com/gpu", ("GPU-2",))),
            ],
            {"ai/a": ["GPU-1"], "x/a": ["GPU-2"]},
        ),
    ],
)
def test_device_ids_become_gpu_uuids_per_pod(pods: list[PodResources], expected: dict[str, list[str]]) -> None:
    assert gpu_assignments(pods) == expected


# -- the client against a real gRPC server -------------------------------------------------------


@pytest.fixture
def kubelet() -> Iterator[Callable[[Callable[[bytes, Any], bytes]], str]]:
    """Start a gRPC server serving v1.PodResourcesLister/List with the given behaviour on a unix
    socket; returns the socket's path (kept short: unix socket paths hold 107 bytes)."""
    servers: list[grpc.Server] = []
    folder = tempfile.mkdtemp(prefix="podres-", dir="/tmp")

    def start(behaviour: Callable[[bytes, Any], bytes]) -> str:
        path = f"{folder}/kubelet.sock"
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
        handler = grpc.method_handlers_generic_handler(
            "v1.PodResourcesLister", {"List": grpc.unary_unary_rpc_method_handler(behaviour)}
        )
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"unix://{path}")
        server.start()
        servers.append(server)
        return path

    yield start
    for server in servers:
        server.stop(grace=None)
    for leftover in Path(folder).iterdir():
        leftover.unlink()
    os.rmdir(folder)


def test_list_calls_the_kubelet_method_and_decodes_its_reply(kubelet: Callable[..., str]) -> None:
    requests: list[bytes] = []

    def answer(request: bytes, context: Any) -> bytes:
        requests.append(request)
        return HAND_BUILT

    client = PodResourcesClient(kubelet(answer))
    try:
        assert [p.name for p in client.list()] == ["llm-0", "web"]
        assert PodResourcesSource(client).assignments() == {"ai/llm-0": ["GPU-b"]}
    finally:
        client.close()
    assert requests == [b"", b""], "ListPodResourcesRequest has no fields: its encoding is empty"


def test_an_error_status_from_the_kubelet_is_named(kubelet: Callable[..., str]) -> None:
    def refuse(request: bytes, context: Any) -> bytes:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "PodResources v1 disabled")

    client = PodResourcesClient(kubelet(refuse))
    try:
        with pytest.raises(PodResourcesError, match=r"List at .* failed: UNIMPLEMENTED: PodResources v1 disabled"):
            client.list()
    finally:
        client.close()


def test_a_missing_socket_is_logged_once_and_answers_unknown(caplog: pytest.LogCaptureFixture) -> None:
    source = PodResourcesSource(PodResourcesClient("/nonexistent/pod-resources/kubelet.sock"))
    with caplog.at_level(logging.WARNING, logger="egpu_node_agent.podresources"):
        assert source.assignments() is None
        assert source.assignments() is None
    [record] = caplog.records
    assert "kubelet PodResources socket /nonexistent/pod-resources/kubelet.sock not found" in record.__dict__["reason"]


def test_a_socket_the_agent_may_not_open_is_permission_denied(kubelet: Callable[..., str]) -> None:
    path = kubelet(lambda request, context: b"")
    os.chmod(os.path.dirname(path), 0o755)
    os.chmod(path, 0o600)  # root's alone, as the kubelet leaves it
    client = PodResourcesClient(path)
    as_root = os.geteuid() == 0
    try:
        if as_root:  # root may open anything: ask as an unprivileged user instead
            os.seteuid(65534)
        else:
            os.chmod(path, 0)
        with pytest.raises(PodResourcesError, match=f"permission denied on kubelet PodResources socket {path}: it is root's"):
            client.list()
    finally:
        if as_root:
            os.seteuid(0)
        client.close()
