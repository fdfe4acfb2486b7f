"""Which GPU each pod on this node got, asked of the kubelet's PodResources API (v1).

The kubelet serves ``v1.PodResourcesLister`` on a unix socket
(``/var/lib/kubelet/pod-resources/kubelet.sock``), gRPC over HTTP/2. The agent calls only
``List`` and decodes only what it needs of the reply, with the small protobuf reader below
instead of generated code: a message of the kubelet's ``api.proto``
(k8s.io/kubelet/pkg/apis/podresources/v1) whose fields the agent reads are

    ListPodResourcesResponse { repeated PodResources pod_resources = 1; }
    PodResources             { string name = 1; string namespace = 2; repeated ContainerResources containers = 3; }
    ContainerResources       { string name = 1; repeated ContainerDevices devices = 2; ... }
    ContainerDevices         { string resource_name = 1; repeated string device_ids = 2; TopologyInfo topology = 3; }

Every other field (CPU ids, memory, dynamic resources, topology) is skipped by its wire type,
so a newer kubelet's additions do not break the reader.

The socket belongs to root. An agent that cannot reach it (not mounted, not root) says so once
in its log and publishes no assignments, and the operator keeps attributing power limits by count.
"""

import logging
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from egpu_api import keys
from egpu_api.assignments import gpu_uuid, pod_key

log = logging.getLogger("egpu_node_agent.podresources")

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
LIST_METHOD = "/v1.PodResourcesLister/List"
# The kubelet's own client allows replies this large (a node with hundreds of pods and devices).
MAX_REPLY_BYTES = 16 * 1024 * 1024

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


class PodResourcesError(Exception):
    """The kubelet could not be asked, or its reply could not be read; the message says which."""


@dataclass(frozen=True)
class ContainerDevices:
    resource_name: str
    device_ids: tuple[str, ...]


@dataclass(frozen=True)
class ContainerResources:
    name: str
    devices: tuple[ContainerDevices, ...]


@dataclass(frozen=True)
class PodResources:
    name: str
    namespace: str
    containers: tuple[ContainerResources, ...]


# -- the protobuf reader -------------------------------------------------------------------------


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """The base-128 varint at ``at`` and the offset after it."""
    value, shift = 0, 0
    while True:
        if at >= len(data):
            raise PodResourcesError("PodResources reply is cut off inside a number")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise PodResourcesError("PodResources reply has a number longer than 64 bits")


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field of one message, in order; a varint's value is
    its int, a length-delimited field's its bytes, a fixed-size field's its little-endian int."""
    at = 0
    while at < len(data):
        tag, at = _varint(data, at)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise PodResourcesError("PodResources reply has a field numbered 0")
        if wire == _VARINT:
            value, at = _varint(data, at)
            yield number, wire, value
        elif wire == _LENGTH:
            size, at = _varint(data, at)
            if at + size > len(data):
                raise PodResourcesError("PodResources reply is cut off inside a field")
            yield number, wire, data[at : at + size]
            at += size
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            if at + size > len(data):
                raise PodResourcesError("PodResources reply is cut off inside a field")
            yield number, wire, int.from_bytes(data[at : at + size], "little")
            at += size
        else:  # 3 and 4 are proto2 groups, which proto3 messages never contain
            raise PodResourcesError(f"PodResources reply has field {number} of unknown wire type {wire}")


def _strings_and_messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    """The length-delimited fields of a message (strings and sub-messages), by number."""
    for number, wire, value in _fields(data):
        if wire == _LENGTH:
            assert isinstance(value, bytes)
            yield number, value


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise PodResourcesError("PodResources reply has a string that is not UTF-8") from None


def _devices(data: bytes) -> ContainerDevices:
    resource, ids = "", []
    for number, value in _strings_and_messages(data):
        if number == 1:
            resource = _text(value)
        elif number == 2:
            ids.append(_text(value))
    return ContainerDevices(resource, tuple(ids))


def _container(data: bytes) -> ContainerResources:
    name, devices = "", []
    for number, value in _strings_and_messages(data):
        if number == 1:
            name = _text(value)
        elif number == 2:
            devices.append(_devices(value))
    return ContainerResources(name, tuple(devices))


def _pod(data: bytes) -> PodResources:
    name, namespace, containers = "", "", []
    for number, value in _strings_and_messages(data):
        if number == 1:
            name = _text(value)
        elif number == 2:
            namespace = _text(value)
        elif number == 3:
            containers.append(_container(value))
    return PodResources(name, namespace, tuple(containers))


def decode_list_response(data: bytes) -> list[PodResources]:
    """A serialized ``ListPodResourcesResponse`` as plain data; ``PodResourcesError`` if malformed."""
    return [_pod(value) for number, value in _strings_and_messages(data) if number == 1]


# -- the client ----------------------------------------------------------------------------------


class PodResourcesClient:
    """``v1.PodResourcesLister/List`` over the kubelet's unix socket, as raw bytes in and out."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout_s: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self._channel: Any = None
        self._list: Any = None

    def list(self) -> list[PodResources]:
        """Every pod the kubelet has admitted, with its devices; ``PodResourcesError`` when the socket
        is missing, refused or the kubelet answers with an error."""
        if self._list is None:
            self._channel = grpc.insecure_channel(
                f"unix://{self.socket_path}", options=[("grpc.max_receive_message_length", MAX_REPLY_BYTES)]
            )
            # No serializers: the request (an empty ListPodResourcesRequest) and the reply stay bytes.
            self._list = self._channel.unary_unary(LIST_METHOD)
        try:
            reply = self._list(b"", timeout=self.timeout_s)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                self._explain_unavailable()
            raise PodResourcesError(
                f"kubelet PodResources List at {self.socket_path} failed: {error.code().name}: {error.details()}"
            ) from None
        return decode_list_response(bytes(reply))

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = self._list = None

    def _explain_unavailable(self) -> None:
        """Name the usual reasons in words rather than gRPC's "failed to connect to all addresses",
        by connecting to the socket as gRPC would."""
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.socket_path)
        except FileNotFoundError:
            raise PodResourcesError(
                f"kubelet PodResources socket {self.socket_path} not found; mount /var/lib/kubelet/pod-resources "
                "(chart value agent.podResources.enabled) or pass --pod-resources-socket ''"
            ) from None
        except PermissionError:
            raise PodResourcesError(
                f"permission denied on kubelet PodResources socket {self.socket_path}: it is root's; "
                "the agent can ask the kubelet when it runs as root (chart value agent.powerActuation.enabled)"
            ) from None
        except OSError as error:
            raise PodResourcesError(f"kubelet PodResources socket {self.socket_path}: {error.strerror}") from None
        finally:
            probe.close()


def gpu_assignments(pods: Iterable[PodResources], resource: str = keys.GPU_RESOURCE) -> dict[str, list[str]]:
    """{"namespace/pod": [GPU uuid, ...]} for the pods holding ``resource``; a time-sliced replica
    id (``GPU-x::1``) counts as its GPU, a MIG slice as its own ``MIG-`` UUID."""
    found: dict[str, list[str]] = {}
    for pod in pods:
        uuids = {
            gpu_uuid(device_id)
            for container in pod.containers
            for devices in container.devices
            if devices.resource_name == resource
            for device_id in devices.device_ids
        }
        if uuids:
            found[pod_key(pod.namespace, pod.name)] = sorted(uuids)
    return found


class PodResourcesSource:
    """The assignment source of a real node (see ``egpu_node_agent.assignments``)."""

    def __init__(self, client: PodResourcesClient) -> None:
        self.client = client
        self._problem: str | None = None

    def assignments(self) -> dict[str, list[str]] | None:
        try:
            pods = self.client.list()
        except PodResourcesError as error:
            if str(error) != self._problem:  # once per distinct problem, not every poll
                log.warning("GPU assignments unknown", extra={"reason": str(error)})
                self._problem = str(error)
            return None
        if self._problem is not None:
            log.info("GPU assignments readable again", extra={"socket": self.client.socket_path})
            self._problem = None
        return gpu_assignments(pods)

    def close(self) -> None:
        self.client.close()
