"""Benchmark: a real model load on a real GPU, cold and warm, against the load-time estimate.

    python bench/real_load.py [--dir DIR] [--size-gib 16] [--json FILE]   # a CUDA GPU; root for a cold cache
    python bench/real_load.py --dry-run                                    # any machine: 64 MiB, CPU only
    python bench/real_load.py --recompute bench/results/real_load-h200-2026-12-02.json  # estimates only

Writes a safetensors file of ``--size-gib`` (bf16 tensors shaped like a transformer's, 256 MiB
each, with a small norm vector between them) to a directory on disk, then loads it as a common
model server does, ``safetensors.torch.load_file(path, device="cuda:0")`` (mmap, then pageable
copies), twice from a cold page cache (``echo 3 > /proc/sys/vm/drop_caches``, as root; the
file's pages are also dropped with ``posix_fadvise``) and twice warm. Before each load it
checks with ``mincore`` how much of the file is in the page cache, so "cold" and "warm" are
readings, not hopes.

The rates the node agent measures itself on the same machine feed the estimate:
- storage: ``egpu_node_agent.storage_probe.probe_storage`` on the file's directory, at the
  agent's default bounds (4 GiB, 10 s); 1 GiB and one-request-in-flight readings are printed
  for reference;
- host-to-device copies: ``egpu_node_agent.probe.measure`` (pageable and pinned);
- link: ``nvidia-smi``'s maximum generation and width through the contract's PCIe arithmetic.

Printed for cold and warm: measured seconds and MB/s, the estimate (model bytes over the
slowest stage plus a fixed start-up term, :func:`slowest_stage_estimate`; cold stages are
storage, pageable copy and link, warm ones pageable copy and link) and the ratio estimate /
measured, target 0.8 to 1.2. For cold loads the rejected alternative is printed beside it,
:func:`serial_stage_estimate` (read, then copy, no overlap): on the H200 it was 33% slow, so
the loader's kernel readahead does overlap the disk with the copies. ``--recompute`` prints
the estimates again from a run's ``--json`` figures, with no GPU. Rates are MB/s (10^6
bytes/s). Read-only on the GPU: nothing here sets clocks, power limits or MIG.
"""

import argparse
import ctypes
import ctypes.util
import glob
import json
import math
import mmap
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from egpu_api import loadpath
from egpu_api.pcie import LinkSpeed, effective_bandwidth_mbps
from egpu_node_agent import storage_probe

GIB = 1 << 30
MIB = 1 << 20
TENSOR_SHAPE = (8192, 16384)  # bf16: 256 MiB, a large projection matrix
NORM_SHAPE = (8192,)  # bf16: 16 KiB, the small tensor a layer also holds
TARGET_LOW, TARGET_HIGH = 0.8, 1.2
LOADS_PER_STATE = 2
PAGE_CACHE_PROBE_BYTES = 4 * GIB


class BenchError(Exception):
    """Something the bench needs is missing; the message says what and how to get it."""


# --- the estimate: the operator's own estimator (egpu_api.loadpath) over the measured stages --


def slowest_stage_estimate(
    model_bytes: int, stages_mbps: Mapping[str, float], startup_s: float = loadpath.STARTUP_SECONDS
) -> tuple[float, str]:
    """Seconds to load ``model_bytes`` through ``stages_mbps`` as the operator estimates it: bytes over
    the slowest stage plus the start-up term. Returns the seconds and the bottleneck stage's name."""
    load = loadpath.estimate(model_bytes, [loadpath.Stage(name, mbps) for name, mbps in stages_mbps.items()], startup_s)
    return load.seconds, load.bottleneck.name if load.bottleneck is not None else "none"


def serial_stage_estimate(model_bytes: int, read_mbps: float, transfer_mbps: float, startup_s: float) -> float:
    """Seconds when the copy waits for the read (one thread: fault a page in, then copy it): times added."""
    return model_bytes / 1e6 / read_mbps + model_bytes / 1e6 / transfer_mbps + startup_s


# --- the model file -------------------------------------------------------------------------


def tensor_layout(size_bytes: int, rows: int = TENSOR_SHAPE[0]) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of bf16 tensors adding up to at least ``size_bytes``; fewer rows, smaller tensors."""
    shape = (rows, TENSOR_SHAPE[1])
    layers = max(1, -(-size_bytes // (2 * _product(shape))))
    layout: list[tuple[str, tuple[int, ...]]] = []
    for layer in range(layers):
        layout.append((f"model.layers.{layer}.mlp.weight", shape))
        layout.append((f"model.layers.{layer}.norm.weight", NORM_SHAPE))
    return layout


def write_safetensors(path: Path, layout: list[tuple[str, tuple[int, ...]]]) -> int:
    """Write a safetensors file of incompressible bf16 data; returns the tensor bytes written.

    The format: an 8-byte little-endian header length, a JSON header (padded with spaces to a
    multiple of 8) naming each tensor's dtype, shape and byte range, then the data.
    """
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in layout:
        size = 2 * _product(shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    block = bytearray(os.urandom(64 * MIB))
    with open(path, "wb") as out:
        out.write(len(encoded).to_bytes(8, "little"))
        out.write(encoded)
        written = 0
        while written < offset:
            piece = min(len(block), offset - written)
            block[:8] = written.to_bytes(8, "little")  # no two blocks alike: nothing to deduplicate
            out.write(memoryview(block)[:piece])
            written += piece
        out.flush()
        os.fsync(out.fileno())
    return offset


def _product(shape: tuple[int, ...]) -> int:
    result = 1
    for dimension in shape:
        result *= dimension
    return result


# --- page cache -----------------------------------------------------------------------------


def resident_fraction(path: Path) -> float:
    """Share of ``path``'s pages in the page cache, by ``mincore`` over a read-only mapping."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    descriptor = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, descriptor, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        try:
            vector = (ctypes.c_ubyte * pages)()
            if libc.mincore(address, size, vector) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
            return sum(1 for page in bytes(vector) if page & 1) / pages
        finally:
            libc.munmap(address, size)
    finally:
        os.close(descriptor)


def drop_page_cache(path: Path, system_wide: bool) -> str:
    """Drop ``path``'s cached pages; with ``system_wide``, every clean page (needs root)."""
    os.sync()
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)
    if not system_wide:
        return "posix_fadvise(DONTNEED) on the file"
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as error:
        return f"posix_fadvise(DONTNEED) on the file (drop_caches refused: {error.strerror})"
    return "drop_caches=3 and posix_fadvise(DONTNEED)"


def page_cache_read_mbps(path: Path, max_bytes: int) -> int:
    """Buffered read rate of a file that is already in the page cache (a memory copy)."""
    buffer = bytearray(64 * MIB)
    total = 0
    with open(path, "rb", buffering=0) as source:
        started = time.perf_counter()
        while total < max_bytes:
            read = source.readinto(buffer)
            if not read:
                break
            total += read
        seconds = time.perf_counter() - started
    return int(total / seconds / 1e6)


# --- the machine ----------------------------------------------------------------------------


def filesystem_of(directory: Path) -> tuple[str, str]:
    """(source device, filesystem type) of the mount that holds ``directory``."""
    best = ("?", "?", "")
    resolved = str(directory.resolve())
    for line in Path("/proc/mounts").read_text().splitlines():
        source, mount, kind = line.split()[:3]
        inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best[2]):
            best = (source, kind, mount)
    return best[0], best[1]


def pick_directory(asked: Path | None, need_bytes: int, dry_run: bool) -> Path:
    """The directory to write the model to: ``--dir``, else the first disk-backed one with room."""
    candidates = [asked] if asked else [Path("/var/tmp"), Path.home(), Path.cwd()]
    for candidate in candidates:
        if not candidate.is_dir():
            continue
        _, kind = filesystem_of(candidate)
        free = shutil.disk_usage(candidate).free
        if kind in ("tmpfs", "ramfs") and not dry_run:
            if asked:
                raise BenchError(f"--dir {asked} is on {kind} (memory): give a directory on a disk")
            continue
        if free >= need_bytes:
            return candidate
        if asked:
            raise BenchError(f"--dir {asked} has {free / GIB:.1f} GiB free, the model needs {need_bytes / GIB:.1f}")
    raise BenchError(f"no disk directory with {need_bytes / GIB:.1f} GiB free among {candidates}; pass --dir")


def nvidia_smi_link() -> dict[str, int] | None:
    """PCIe generation and width, current and maximum, from nvidia-smi (None without it)."""
    fields = "pcie.link.gen.current,pcie.link.gen.max,pcie.link.width.current,pcie.link.width.max"
    try:
        output = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits", "--id=0"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    values = [int(value) for value in output.strip().split(",")]
    return dict(zip(("gen_current", "gen_max", "width_current", "width_max"), values, strict=True))


def load_cudart_beside_torch() -> Any:
    """The agent's libcudart loader; failing that, the runtime that PyTorch's wheels ship."""
    from egpu_node_agent import probe

    try:
        return probe.load_cudart()
    except probe.ProbeUnavailable:
        pass
    for folder in sys.path:
        for found in sorted(glob.glob(os.path.join(folder, "nvidia", "**", "libcudart.so*"), recursive=True)):
            try:
                return ctypes.CDLL(found)
            except OSError:
                continue
    raise BenchError("no libcudart for the agent's copy probe; set EGPU_CUDART to its path")


# --- loading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    state: str
    resident_before: float
    seconds: float
    mbps: int
    cache_drop: str


def make_loader(dry_run: bool) -> tuple[Callable[[Path], int], Callable[[], None], str]:
    """(load the file and return its tensor bytes, release what was loaded, description)."""
    try:
        import torch
        from safetensors.torch import load_file
    except ImportError:
        if not dry_run:
            raise BenchError("needs PyTorch and safetensors (pip install torch safetensors) and a CUDA GPU") from None
        return _stdlib_load, lambda: None, "stdlib reader (dry run: no PyTorch here)"
    device = "cpu" if dry_run else "cuda:0"
    if not dry_run and not torch.cuda.is_available():
        raise BenchError("PyTorch sees no CUDA GPU; run on a GPU machine, or use --dry-run for a CPU-only check")
    loaded: dict[str, Any] = {}

    def load(path: Path) -> int:
        loaded.update(load_file(str(path), device=device))
        if device != "cpu":
            torch.cuda.synchronize()
        return sum(tensor.numel() * tensor.element_size() for tensor in loaded.values())

    def release() -> None:
        loaded.clear()
        if device != "cpu":
            torch.cuda.empty_cache()

    return load, release, f'safetensors.torch.load_file(path, device="{device}")'


def _stdlib_load(path: Path) -> int:
    """Read every tensor's bytes the way the header describes them (dry runs without PyTorch)."""
    with open(path, "rb") as source:
        length = int.from_bytes(source.read(8), "little")
        header = json.loads(source.read(length))
        total = 0
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            start, end = entry["data_offsets"]
            source.seek(8 + length + start)
            if len(source.read(end - start)) != end - start:
                raise BenchError(f"{path}: tensor {name} is cut short")
            total += end - start
    return total


def timed_load(path: Path, state: str, load: Callable[[Path], int], release: Callable[[], None], drop: str) -> Load:
    resident = resident_fraction(path)
    started = time.perf_counter()
    loaded_bytes = load(path)
    seconds = time.perf_counter() - started
    release()
    return Load(state, resident, seconds, int(loaded_bytes / seconds / 1e6), drop)


# --- the run --------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    size_bytes = int(args.size_gib * GIB)
    load, release, loader = make_loader(args.dry_run)
    started = time.perf_counter()
    if not args.dry_run:
        import torch

        torch.zeros(1, device="cuda:0")  # the CUDA context, before any timed load
    process_start_s = time.perf_counter() - started
    root = pick_directory(args.dir, size_bytes + GIB, args.dry_run) / "egpu-real-load"
    root.mkdir(exist_ok=True)
    model = root / "model.safetensors"
    tiny = root.parent / "egpu-real-load-tiny.safetensors"  # outside root: the storage probe reads root only
    source, kind = filesystem_of(root)
    print(f"model directory {root} on {source} ({kind}); loader {loader}", flush=True)
    report: dict[str, Any] = {"directory": str(root), "filesystem": f"{source} ({kind})", "loader": loader}
    try:
        write_started = time.perf_counter()
        model_bytes = write_safetensors(model, tensor_layout(size_bytes, 256 if args.dry_run else TENSOR_SHAPE[0]))
        write_s = time.perf_counter() - write_started
        print(f"wrote {model_bytes / GIB:.2f} GiB in {write_s:.1f} s ({model_bytes / write_s / 1e6:,.0f} MB/s)", flush=True)
        write_safetensors(tiny, [("tiny.weight", (64,))])
        report.update(model_bytes=model_bytes, write_seconds=round(write_s, 2))

        storage = storage_probe.probe_storage(root, storage_probe.DEFAULT_MAX_BYTES, storage_probe.DEFAULT_MAX_SECONDS)
        references = {"1gib": storage_probe.probe_storage(root, GIB, storage_probe.DEFAULT_MAX_SECONDS),
                      "one_in_flight": one_request_in_flight(root)}  # fmt: skip
        print(f"storage probe (agent defaults): {storage.read_mbps:,} MB/s, {storage.method}, "
              f"{storage.bytes_read / MIB:.0f} MiB in {storage.seconds:.2f} s; references: 1 GiB "
              f"{references['1gib'].read_mbps:,} MB/s, one 16 MiB request in flight "
              f"{references['one_in_flight'].read_mbps:,} MB/s", flush=True)  # fmt: skip
        report.update(storage=asdict(storage), storage_references={k: asdict(v) for k, v in references.items()})

        copy = measure_copies(args.dry_run)
        report.update(copy=copy)
        link = None if args.dry_run else nvidia_smi_link()
        report.update(nvidia_smi_link=link)
        if link:
            print(f"nvidia-smi PCIe: current Gen{link['gen_current']} x{link['width_current']}, "
                  f"max Gen{link['gen_max']} x{link['width_max']}", flush=True)  # fmt: skip

        system_wide = os.geteuid() == 0 and not args.dry_run  # never drop a shared dev machine's caches
        warmup = timed_load(tiny, "tiny", load, release, "none")  # warms the loader's own code paths
        startup = timed_load(tiny, "tiny", load, release, "none")
        loads: list[Load] = []
        for _ in range(LOADS_PER_STATE):
            drop = drop_page_cache(model, system_wide)
            loads.append(timed_load(model, "cold", load, release, drop))
            print(_load_line(loads[-1]), flush=True)
        for _ in range(LOADS_PER_STATE):
            loads.append(timed_load(model, "warm", load, release, "none"))
            print(_load_line(loads[-1]), flush=True)
        page_cache_mbps = page_cache_read_mbps(model, PAGE_CACHE_PROBE_BYTES)
        print(f"page cache (buffered read of the warm file): {page_cache_mbps:,} MB/s", flush=True)
        report.update(loads=[asdict(entry) for entry in loads], page_cache_mbps=page_cache_mbps,
                      fixed_load_seconds=round(startup.seconds, 4), warmup_tiny_seconds=round(warmup.seconds, 4),
                      process_start_seconds=round(process_start_s, 2))  # fmt: skip
        report["estimates"] = estimates(report)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
            tiny.unlink(missing_ok=True)
    return report


def one_request_in_flight(root: Path) -> storage_probe.StorageReading:
    """The probe as a plain ``dd iflag=direct`` would read (reference only: the agent keeps 4 in flight)."""
    saved = storage_probe._QUEUE_DEPTH, storage_probe._CHUNK_BYTES
    storage_probe._QUEUE_DEPTH, storage_probe._CHUNK_BYTES = 1, 16 * MIB
    try:
        return storage_probe.probe_storage(root, storage_probe.DEFAULT_MAX_BYTES, storage_probe.DEFAULT_MAX_SECONDS)
    finally:
        storage_probe._QUEUE_DEPTH, storage_probe._CHUNK_BYTES = saved


def measure_copies(dry_run: bool) -> dict[str, int] | None:
    """The agent's own host-to-device probe on GPU 0: pageable and pinned MB/s."""
    if dry_run:
        print("copy probe: skipped (dry run)", flush=True)
        return None
    from egpu_node_agent import probe

    result = probe.measure(load_cudart_beside_torch(), 0, size_mib=256, repeats=5)
    print(f"copy probe (agent, 5 x 256 MiB): pageable {result.pageable_mbps:,} MB/s, "
          f"pinned {result.pinned_mbps:,} MB/s", flush=True)  # fmt: skip
    return {"pageable_mbps": result.pageable_mbps, "pinned_mbps": result.pinned_mbps}


def agent_storage_reading(report: Mapping[str, Any]) -> dict[str, Any]:
    """The recorded storage reading taken at the agent's current default bounds (older runs named it otherwise)."""
    recorded = [report["storage"], report.get("storage_4gib"), *report.get("storage_references", {}).values()]
    for reading in recorded:
        if reading and reading["bytes_read"] == storage_probe.DEFAULT_MAX_BYTES:
            return dict(reading)
    return dict(report["storage"])  # a cache smaller than the bound, or the time bound stopped it


def estimates(report: Mapping[str, Any]) -> dict[str, Any]:
    """The estimate for cold and warm next to the mean measured seconds, from a run's recorded figures.

    Cold: storage, pageable copy, link. Warm: pageable copy and link only; the loader's pageable
    copy reads the page cache itself (mmap), so there is no separate memory-copy stage (the
    bench's page-cache figure, a read() into a buffer, is shown for reference).
    """
    model_bytes = int(report["model_bytes"])
    startup_s = float(report["fixed_load_seconds"])
    storage = agent_storage_reading(report)
    transfer: dict[str, float] = {}
    if report.get("copy"):
        transfer["pageable copy"] = float(report["copy"]["pageable_mbps"])
    link = report.get("nvidia_smi_link")
    if link:
        transfer["link"] = float(effective_bandwidth_mbps(LinkSpeed(link["gen_max"], link["width_max"])))
    result: dict[str, Any] = {"startup_seconds": startup_s, "storage_reading": storage}
    print(f"\nfixed start-up term (a 128-byte load): {startup_s * 1000:.1f} ms; storage (agent defaults, "
          f"{storage['bytes_read'] / MIB:.0f} MiB, {storage['method']}) {storage['read_mbps']:,} MB/s; "
          + (", ".join(f"{name} {rate:,.0f} MB/s" for name, rate in transfer.items()) or "no transfer stages (dry run)")
          + f"; page cache (reference) {report['page_cache_mbps']:,} MB/s")  # fmt: skip
    print(f"{'state':<5} {'measured s':>10} {'MB/s':>7} | {'estimate s':>10} {'ratio':>6} {'bottleneck':<14}"
          f" | {'read-then-copy s':>16} {'ratio':>6}")  # fmt: skip
    within: dict[str, bool] = {}
    for state in ("cold", "warm"):
        stages = {"storage": float(storage["read_mbps"]), **transfer} if state == "cold" else dict(transfer)
        measured = statistics.mean(entry["seconds"] for entry in report["loads"] if entry["state"] == state)
        if not stages:  # a dry run without PyTorch: nothing but storage to estimate a warm load with
            stages = {"page cache": float(report["page_cache_mbps"])}
        estimate, bottleneck = slowest_stage_estimate(model_bytes, stages, startup_s)
        operator_estimate, _ = slowest_stage_estimate(model_bytes, stages)  # with the operator's fixed start-up term
        row: dict[str, Any] = {
            "operator_estimate_seconds": round(operator_estimate, 3),
            "operator_ratio": round(operator_estimate / measured, 3),
            "measured_seconds": round(measured, 3),
            "measured_mbps": int(model_bytes / measured / 1e6),
            "stages_mbps": stages,
            "estimate_seconds": round(estimate, 3),
            "ratio": round(estimate / measured, 3),
            "bottleneck": bottleneck,
        }
        serial_text = ""
        if state == "cold":  # the rejected alternative: no overlap of the read and the copy
            serial = serial_stage_estimate(model_bytes, storage["read_mbps"], min(transfer.values(), default=math.inf),
                                           startup_s)  # fmt: skip
            row.update(read_then_copy_seconds=round(serial, 3), read_then_copy_ratio=round(serial / measured, 3))
            serial_text = f"{serial:>16.2f} {serial / measured:>6.2f}"
        result[state] = row
        within[state] = TARGET_LOW <= row["ratio"] <= TARGET_HIGH
        print(f"{state:<5} {measured:>10.2f} {row['measured_mbps']:>7,} | {estimate:>10.2f} {row['ratio']:>6.2f} "
              f"{bottleneck:<14} | {serial_text}")  # fmt: skip
        print(f"      operator's estimate (start-up term {loadpath.STARTUP_SECONDS} s): {operator_estimate:.2f} s, "
              f"{operator_estimate / measured:.2f} x the measured load")  # fmt: skip
    result["within_20_percent"] = within
    print("ratio = estimate / measured, target 0.8 to 1.2: "
          + ", ".join(f"{state} {'within' if ok else 'OUTSIDE'}" for state, ok in within.items()))  # fmt: skip
    return result


def _load_line(entry: Load) -> str:
    return (f"{entry.state} load: {entry.seconds:.2f} s, {entry.mbps:,} MB/s "
            f"(in page cache before: {entry.resident_before:.0%}; cache: {entry.cache_drop})")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, help="directory on the disk to write the model to (default: /var/tmp)")
    parser.add_argument("--size-gib", type=float, default=None, help="model size (default 16; 0.0625 with --dry-run)")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep the model file afterwards")
    parser.add_argument("--dry-run", action="store_true", help="CPU only, a small file, no system-wide cache drop")
    parser.add_argument("--recompute", type=Path, help="no measuring: print the estimates from a recorded --json file")
    args = parser.parse_args()
    if args.recompute:
        try:
            recorded = json.loads(args.recompute.read_text())
        except (OSError, ValueError) as error:
            print(f"real_load: --recompute {args.recompute}: {error}; give a file that --json wrote", file=sys.stderr)
            return 2
        recorded["estimates"] = estimates(recorded)
        if args.json:
            args.json.write_text(json.dumps(recorded, indent=2) + "\n")
        return 0
    if args.size_gib is None:
        args.size_gib = 1 / 16 if args.dry_run else 16.0
    if args.size_gib <= 0:
        print(f"--size-gib is {args.size_gib}; give a positive size in GiB", file=sys.stderr)
        return 2
    try:
        report = run(args)
    except (BenchError, storage_probe.StorageProbeError) as error:
        print(f"real_load: {error}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
