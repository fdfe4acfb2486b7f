"""Opt-in measured sequential read rate of the node's model cache, the first stage of a load.

A model loads no faster than its weights come off storage, and on small hosts (SD card, USB
SSD, network mount) that is often slower than any PCIe link. This probe reads the files under a
configured model-cache path the way a cold load would: sequentially, largest file first, past
the page cache. It uses ``O_DIRECT`` with page-aligned buffers (anonymous ``mmap`` memory is
page-aligned); where the filesystem refuses ``O_DIRECT`` (tmpfs before Linux 6.6, some FUSE and network mounts)
it drops the file's cached pages with ``posix_fadvise(DONTNEED)`` and reads normally, and the
reading says which method it used. On tmpfs the fadvise frees nothing, so that reading is the
memory's rate, which is that tier's true rate.

The probe is bounded by bytes and by seconds, whichever comes first, and reads only: it never
writes under the path unless asked to with :func:`write_probe_file`. Rates are MB/s
(10^6 bytes per second), like every bandwidth the agent publishes.
"""

import errno
import mmap
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# 4 GiB: on the H200 machine's virtio disk a 1 GiB read gave 1,252 MB/s, 4 GiB 1,468 and a
# 16 GiB cold load 1,639 (docs/measurements.md); short reads undercount a device that ramps up.
# The time bound keeps slow storage short: 10 s at 90 MB/s reads 900 MB.
DEFAULT_MAX_BYTES = 4 << 30
DEFAULT_MAX_SECONDS = 10.0
PROBE_FILE_NAME = ".egpu-storage-probe"

# Several large requests in flight, as the kernel's readahead keeps for a loader that reads
# sequentially: one O_DIRECT request at a time leaves the device idle between requests and
# reads well below what a buffered load gets (the H200 machine's disk, 1 GiB: 1,052 MB/s with
# one 16 MiB request, 1,252 with four of 8 MiB; its cold load reached 1,639).
_CHUNK_BYTES = 8 << 20
_QUEUE_DEPTH = 4
_DIRECT_REFUSED = (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP)

Method = Literal["o_direct", "fadvise_dontneed", "mixed"]


class StorageProbeError(Exception):
    """The path cannot be probed; the message names the path and what to change."""


@dataclass(frozen=True)
class StorageReading:
    """One bounded sequential read of a model-cache path.

    ``method`` is ``o_direct`` (page cache bypassed), ``fadvise_dontneed`` (cached pages dropped
    first, then buffered reads: the filesystem refused O_DIRECT) or ``mixed`` (files differed).
    """

    path: str
    read_mbps: int
    method: Method
    bytes_read: int
    seconds: float
    files_read: int


def probe_storage(path: Path, max_bytes: int = DEFAULT_MAX_BYTES, max_seconds: float = DEFAULT_MAX_SECONDS) -> StorageReading:
    """Read files under ``path`` (a file or a directory) sequentially and return the rate.

    Stops after ``max_bytes`` or ``max_seconds``, whichever comes first (the check runs between
    chunks of 8 MiB, so a read may end a few chunks past the time bound). Raises
    :class:`StorageProbeError` when the path is missing, holds no readable bytes, or the bounds
    are not positive.
    """
    if max_bytes <= 0:
        raise StorageProbeError(f"storage probe max_bytes is {max_bytes}; set it to a positive number of bytes")
    if max_seconds <= 0:
        raise StorageProbeError(f"storage probe max_seconds is {max_seconds}; set it to a positive number of seconds")
    files = list(_files_largest_first(path))
    if not files:
        raise StorageProbeError(
            f"model-cache path {path} holds no readable files; point it at the model cache or write a probe file first"
        )
    buffers = [mmap.mmap(-1, _CHUNK_BYTES) for _ in range(_QUEUE_DEPTH)]  # anonymous maps are page-aligned
    methods: set[Method] = set()
    total = 0
    files_read = 0
    started = time.perf_counter()
    deadline = started + max_seconds
    try:
        for file in files:
            if total >= max_bytes or time.perf_counter() >= deadline:
                break
            read, file_method = _read_file(file, buffers, max_bytes - total, deadline)
            if read:
                total += read
                files_read += 1
                methods.add(file_method)
    finally:
        for buffer in buffers:
            buffer.close()
    seconds = time.perf_counter() - started
    if total == 0:
        raise StorageProbeError(f"model-cache path {path}: every file was empty or unreadable; nothing to measure")
    method: Method = methods.pop() if len(methods) == 1 else "mixed"
    return StorageReading(str(path), int(total / seconds / 1e6), method, total, seconds, files_read)


def write_probe_file(directory: Path, size_bytes: int) -> Path:
    """Write an incompressible file of ``size_bytes`` for :func:`probe_storage` to read; opt-in.

    For a cache that is still empty. The data reaches the device (fsync) and its pages are then
    dropped from the page cache, so a probe right after reads the storage, not memory. The
    caller removes the file when done.
    """
    if size_bytes <= 0:
        raise StorageProbeError(f"probe file size is {size_bytes}; set it to a positive number of bytes")
    if not directory.is_dir():
        raise StorageProbeError(f"model-cache path {directory} is not a directory; create it or fix the path")
    target = directory / PROBE_FILE_NAME
    block = os.urandom(min(_CHUNK_BYTES, size_bytes))  # one random block, varied per chunk below
    with open(target, "wb") as out:
        written = 0
        while written < size_bytes:
            piece = min(len(block), size_bytes - written)
            out.write(written.to_bytes(8, "little") + block[8:piece] if piece > 8 else block[:piece])
            written += piece
        out.flush()
        os.fsync(out.fileno())
        os.posix_fadvise(out.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return target


def _files_largest_first(path: Path) -> Iterator[Path]:
    """Regular files under ``path``, each inode once (model caches link snapshots to blobs)."""
    if not path.exists():
        raise StorageProbeError(f"model-cache path {path} does not exist; set it to the directory that holds the models")
    candidates = [path] if path.is_file() else [Path(root) / name for root, _, names in os.walk(path) for name in names]
    seen: set[tuple[int, int]] = set()
    sized: list[tuple[int, Path]] = []
    for candidate in candidates:
        try:
            status = candidate.stat()
        except OSError:
            continue  # a dangling link or a file removed since the walk
        if not candidate.is_file() or (status.st_dev, status.st_ino) in seen or status.st_size == 0:
            continue
        seen.add((status.st_dev, status.st_ino))
        sized.append((status.st_size, candidate))
    sized.sort(key=lambda item: (-item[0], str(item[1])))
    return (file for _, file in sized)


def _read_file(file: Path, buffers: list[mmap.mmap], budget: int, deadline: float) -> tuple[int, Method]:
    """Read up to ``budget`` bytes of ``file`` from its start, bypassing the page cache."""
    try:
        descriptor = _open_direct(file)
        try:
            return _read_chunks(descriptor, buffers, budget, deadline), "o_direct"
        finally:
            os.close(descriptor)
    except OSError as error:
        if error.errno not in _DIRECT_REFUSED:
            return 0, "o_direct"  # unreadable (permissions, I/O error): the caller counts nothing
    # Refused at open or at the first read (some filesystems accept the flag and fail reads).
    return _read_buffered(file, buffers, budget, deadline), "fadvise_dontneed"


def _open_direct(file: Path) -> int:
    return os.open(file, os.O_RDONLY | getattr(os, "O_DIRECT", 0) | getattr(os, "O_CLOEXEC", 0))


def _read_buffered(file: Path, buffers: list[mmap.mmap], budget: int, deadline: float) -> int:
    try:
        descriptor = os.open(file, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return 0
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        read = _read_chunks(descriptor, buffers, budget, deadline)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)  # leave the cache as we found it
        return read
    except OSError:
        return 0
    finally:
        os.close(descriptor)


def _read_chunks(descriptor: int, buffers: list[mmap.mmap], budget: int, deadline: float) -> int:
    """Read from offset 0 with one request per buffer in flight; the bytes read, counted exactly."""
    lock = threading.Lock()
    cursor = _Cursor()

    def worker(buffer: mmap.mmap) -> None:
        view = memoryview(buffer)
        try:
            while True:
                with lock:
                    if cursor.done or cursor.next_offset >= budget or time.perf_counter() >= deadline:
                        return
                    offset = cursor.next_offset
                    # O_DIRECT needs lengths in whole pages: round the last request up (counted, so honest).
                    want = min(len(view), -(-(budget - offset) // mmap.PAGESIZE) * mmap.PAGESIZE)
                    cursor.next_offset += want
                read = os.preadv(descriptor, [view[:want]], offset)
                with lock:
                    cursor.total += read
                    cursor.done = cursor.done or read < want  # end of file
        except OSError as error:
            with lock:
                cursor.done, cursor.error = True, error
        finally:
            view.release()

    helpers = [threading.Thread(target=worker, args=(buffer,), daemon=True) for buffer in buffers[1:]]
    for helper in helpers:
        helper.start()
    worker(buffers[0])
    for helper in helpers:
        helper.join()
    if cursor.error is not None:
        raise cursor.error
    return cursor.total


@dataclass
class _Cursor:
    next_offset: int = 0
    total: int = 0
    done: bool = False
    error: OSError | None = None
