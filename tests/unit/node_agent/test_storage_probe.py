"""The model-cache storage probe: what it reads, its bounds, its fallback and its errors (never its speed)."""

import errno
import os
from pathlib import Path

import pytest

from egpu_node_agent import storage_probe
from egpu_node_agent.storage_probe import StorageProbeError, probe_storage, write_probe_file

MIB = 1 << 20


def cache(tmp_path: Path, sizes: dict[str, int]) -> Path:
    root = tmp_path / "models"
    for name, size in sizes.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(os.urandom(size))
    return root


def refuse_direct(monkeypatch: pytest.MonkeyPatch, code: int = errno.EINVAL) -> None:
    def refused(file: Path) -> int:
        raise OSError(code, os.strerror(code), str(file))

    monkeypatch.setattr(storage_probe, "_open_direct", refused)


def test_reads_every_file_under_the_path_when_the_bounds_allow(tmp_path: Path) -> None:
    root = cache(tmp_path, {"a/model.safetensors": 3 * MIB + 123, "b/config.json": 5000})
    reading = probe_storage(root, max_bytes=1 << 30, max_seconds=60)
    assert reading.bytes_read == 3 * MIB + 123 + 5000
    assert reading.files_read == 2
    assert reading.path == str(root)
    assert reading.read_mbps >= 0
    assert reading.seconds > 0
    assert reading.method in ("o_direct", "fadvise_dontneed")


def test_the_byte_bound_stops_the_read_at_a_whole_page(tmp_path: Path) -> None:
    root = cache(tmp_path, {"big.bin": 8 * MIB})
    reading = probe_storage(root, max_bytes=MIB + 1, max_seconds=60)
    assert reading.bytes_read == MIB + 4096  # O_DIRECT lengths are whole pages
    assert reading.files_read == 1


def test_several_readers_in_flight_count_every_byte_once(tmp_path: Path) -> None:
    root = cache(tmp_path, {"big.bin": 5 * storage_probe._CHUNK_BYTES + 5})
    assert probe_storage(root, max_bytes=1 << 30, max_seconds=60).bytes_read == 5 * storage_probe._CHUNK_BYTES + 5
    budget = 2 * storage_probe._CHUNK_BYTES + 1
    assert probe_storage(root, max_bytes=budget, max_seconds=60).bytes_read == budget - 1 + 4096


def test_largest_file_first_so_a_small_budget_reads_the_weights(tmp_path: Path) -> None:
    root = cache(tmp_path, {"tokenizer.json": 4096, "weights.bin": 2 * MIB})
    reading = probe_storage(root, max_bytes=2 * MIB, max_seconds=60)
    assert (reading.bytes_read, reading.files_read) == (2 * MIB, 1)


def test_a_linked_file_counts_once(tmp_path: Path) -> None:
    root = cache(tmp_path, {"blobs/abc": MIB})
    (root / "snapshots").mkdir()
    (root / "snapshots" / "model.bin").symlink_to(root / "blobs" / "abc")
    reading = probe_storage(root, max_bytes=1 << 30, max_seconds=60)
    assert (reading.bytes_read, reading.files_read) == (MIB, 1)


def test_a_single_file_path_is_probed_directly(tmp_path: Path) -> None:
    root = cache(tmp_path, {"one.bin": MIB, "other.bin": MIB})
    assert probe_storage(root / "one.bin", max_bytes=1 << 30, max_seconds=60).bytes_read == MIB


def test_the_time_bound_stops_between_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = cache(tmp_path, {"a.bin": 40 * MIB})
    clock = iter(float(tick) for tick in range(1000))
    monkeypatch.setattr(storage_probe.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(storage_probe, "_QUEUE_DEPTH", 1)  # one reader, so the clock's reads are in order
    # started=0, deadline=2.5; checks at 1 (file loop), 2 (first chunk), 3 (stop).
    reading = probe_storage(root, max_bytes=1 << 30, max_seconds=2.5)
    assert reading.bytes_read == storage_probe._CHUNK_BYTES


@pytest.mark.parametrize("code", [errno.EINVAL, errno.EOPNOTSUPP])
def test_falls_back_to_dropping_the_cache_where_o_direct_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    root = cache(tmp_path, {"model.bin": 3 * MIB + 7})
    refuse_direct(monkeypatch, code)
    reading = probe_storage(root, max_bytes=1 << 30, max_seconds=60)
    assert (reading.method, reading.bytes_read) == ("fadvise_dontneed", 3 * MIB + 7)


def test_files_that_differ_in_method_read_as_mixed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = cache(tmp_path, {"big.bin": 2 * MIB, "small.bin": MIB})

    def refuse_small(file: Path) -> int:
        if file.name == "small.bin":
            raise OSError(errno.EINVAL, "refused", str(file))
        return os.open(file, os.O_RDONLY)  # stands in for a filesystem that honours O_DIRECT

    monkeypatch.setattr(storage_probe, "_open_direct", refuse_small)
    reading = probe_storage(root, max_bytes=1 << 30, max_seconds=60)
    assert reading.bytes_read == 3 * MIB
    assert reading.method == "mixed"


def test_an_unreadable_file_is_skipped_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = cache(tmp_path, {"a.bin": MIB, "b.bin": 2 * MIB})
    opened = storage_probe._open_direct

    def deny_b(file: Path) -> int:
        if file.name == "b.bin":
            raise OSError(errno.EACCES, "denied", str(file))
        return opened(file)

    monkeypatch.setattr(storage_probe, "_open_direct", deny_b)
    reading = probe_storage(root, max_bytes=1 << 30, max_seconds=60)
    assert (reading.bytes_read, reading.files_read) == (MIB, 1)


@pytest.mark.parametrize(
    ("setup", "bounds", "message"),
    [
        pytest.param(lambda root: None, (MIB, 1.0), "does not exist", id="missing"),
        pytest.param(lambda root: root.mkdir(), (MIB, 1.0), "holds no readable files", id="empty-directory"),
        pytest.param(lambda root: (root.mkdir(), (root / "x").touch()), (MIB, 1.0), "no readable", id="empty-files"),
        pytest.param(lambda root: root.mkdir(), (0, 1.0), "max_bytes is 0", id="zero-bytes"),
        pytest.param(lambda root: root.mkdir(), (MIB, -1.0), "max_seconds is -1.0", id="negative-seconds"),
    ],
)
def test_bad_input_is_one_sentence_naming_the_field(
    tmp_path: Path, setup: object, bounds: tuple[int, float], message: str
) -> None:
    root = tmp_path / "cache"
    setup(root)  # type: ignore[operator]
    with pytest.raises(StorageProbeError, match=message):
        probe_storage(root, *bounds)


def test_write_probe_file_then_probe_reads_exactly_it(tmp_path: Path) -> None:
    written = write_probe_file(tmp_path, 5 * MIB + 3)
    assert written == tmp_path / storage_probe.PROBE_FILE_NAME
    assert written.stat().st_size == 5 * MIB + 3
    chunks = written.read_bytes()
    assert chunks[: 16 * MIB] != bytes(len(chunks[: 16 * MIB]))  # not zeros: nothing a device could compress away
    assert probe_storage(tmp_path, max_bytes=1 << 30, max_seconds=60).bytes_read == 5 * MIB + 3


@pytest.mark.parametrize(
    ("make_target", "size", "message"),
    [
        pytest.param(lambda tmp: tmp, 0, "probe file size is 0", id="zero-size"),
        pytest.param(lambda tmp: tmp / "missing", MIB, "is not a directory", id="missing-directory"),
    ],
)
def test_write_probe_file_rejects_bad_input(tmp_path: Path, make_target: object, size: int, message: str) -> None:
    with pytest.raises(StorageProbeError, match=message):
        write_probe_file(make_target(tmp_path), size)  # type: ignore[operator]
