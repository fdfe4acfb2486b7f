"""Opt-in measured host-to-device bandwidth, through the CUDA runtime loaded with ctypes.

The theoretical figure trusts the link; this one measures what a copy achieves, pinned
(page-locked, what a loader using cudaHostAlloc sees) and pageable (plain malloc'd memory,
what naive loaders see, often limited by the host's memcpy rather than the link). It
needs only libcudart, not PyTorch, and runs once per GPU at agent start.
"""

import ctypes
import ctypes.util
import os
import time
from dataclasses import dataclass
from typing import Any

from egpu_node_agent.sysfs import normalize_bus_id

_HOST_TO_DEVICE = 1  # cudaMemcpyHostToDevice
_CANDIDATES = ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0")


class ProbeUnavailable(Exception):
    """No CUDA runtime, or it failed; the message says which."""


@dataclass(frozen=True)
class ProbeResult:
    pci_bus_id: str
    pinned_mbps: int
    pageable_mbps: int
    size_mib: int
    repeats: int


def load_cudart() -> Any:
    """libcudart from $EGPU_CUDART, the loader path, or pip's nvidia-cuda-runtime package."""
    names = [os.environ["EGPU_CUDART"]] if os.environ.get("EGPU_CUDART") else []
    found = ctypes.util.find_library("cudart")
    names += [found] if found else []
    names += list(_CANDIDATES)
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise ProbeUnavailable("no CUDA runtime (libcudart) found; set EGPU_CUDART to its path to measure bandwidth")


def measure(cudart: Any, device: int, size_mib: int = 256, repeats: int = 5) -> ProbeResult:
    """Time ``repeats`` host-to-device copies of ``size_mib`` from pinned and from pageable memory."""
    size = size_mib * 1024 * 1024
    _check(cudart, cudart.cudaSetDevice(device), "cudaSetDevice")
    bus = ctypes.create_string_buffer(32)
    _check(cudart, cudart.cudaDeviceGetPCIBusId(bus, 32, device), "cudaDeviceGetPCIBusId")
    device_buffer = ctypes.c_void_p()
    pinned = ctypes.c_void_p()
    _check(cudart, cudart.cudaMalloc(ctypes.byref(device_buffer), ctypes.c_size_t(size)), "cudaMalloc")
    try:
        _check(cudart, cudart.cudaMallocHost(ctypes.byref(pinned), ctypes.c_size_t(size)), "cudaMallocHost")
        try:
            ctypes.memset(pinned, 1, size)
            pinned_mbps = _time_copies(cudart, device_buffer, pinned, size, repeats)
        finally:
            cudart.cudaFreeHost(pinned)
        pageable = (ctypes.c_char * size)()
        ctypes.memset(pageable, 1, size)  # touch every page, so the copy does not measure page faults
        pageable_mbps = _time_copies(cudart, device_buffer, ctypes.cast(pageable, ctypes.c_void_p), size, repeats)
    finally:
        cudart.cudaFree(device_buffer)
    return ProbeResult(bus.value.decode().lower(), pinned_mbps, pageable_mbps, size_mib, repeats)


def measure_all(cudart: Any, size_mib: int = 256, repeats: int = 5) -> dict[str, ProbeResult]:
    """Measure every CUDA device, keyed by PCI bus id (CUDA may order devices unlike NVML)."""
    count = ctypes.c_int()
    _check(cudart, cudart.cudaGetDeviceCount(ctypes.byref(count)), "cudaGetDeviceCount")
    results = [measure(cudart, device, size_mib, repeats) for device in range(count.value)]
    return {normalize_bus_id(result.pci_bus_id): result for result in results}


def _time_copies(cudart: Any, destination: ctypes.c_void_p, source: ctypes.c_void_p, size: int, repeats: int) -> int:
    copy = cudart.cudaMemcpy
    _check(cudart, copy(destination, source, ctypes.c_size_t(size), _HOST_TO_DEVICE), "cudaMemcpy")  # warm-up
    _check(cudart, cudart.cudaDeviceSynchronize(), "cudaDeviceSynchronize")
    started = time.perf_counter()
    for _ in range(repeats):
        _check(cudart, copy(destination, source, ctypes.c_size_t(size), _HOST_TO_DEVICE), "cudaMemcpy")
    _check(cudart, cudart.cudaDeviceSynchronize(), "cudaDeviceSynchronize")
    return int(size * repeats / (time.perf_counter() - started) / 1e6)


def _check(cudart: Any, code: int, call: str) -> None:
    if code != 0:
        cudart.cudaGetErrorString.restype = ctypes.c_char_p
        raise ProbeUnavailable(f"{call} failed: {cudart.cudaGetErrorString(code).decode()} (CUDA error {code})")
