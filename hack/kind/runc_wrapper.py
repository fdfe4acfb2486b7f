#!/usr/bin/env python3
"""runc with the capabilities this host's bounding set lacks taken out of the OCI spec.

Registered by hack/kind/engine.sh as a Docker runtime only on hosts that need it: Docker 20.10
grants --privileged containers (kind's nodes) every capability it knows, and on a VM whose
bounding set lacks one (CAP_SYS_RESOURCE on Firecracker) runc fails with "operation not
permitted". The spec is edited in place (`create --bundle B`, `exec --process P`), then runc runs.
"""

import json
import os
import sys
from pathlib import Path

# Bit n of a capability set is the capability named at index n.
NAMES = """
CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE
NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO
SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME
SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG
WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE
""".split()  # noqa: SIM905 (one long list reads worse)


def missing() -> set[str]:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            bounding = int(line.split()[1], 16)
            return {f"CAP_{name}" for bit, name in enumerate(NAMES) if not bounding >> bit & 1}
    return set()


def strip(spec_path: Path, process_only: bool) -> None:
    spec = json.loads(spec_path.read_text())
    process = spec if process_only else spec.get("process", {})
    capabilities = process.get("capabilities") or {}
    lacking = missing()
    for kind, names in capabilities.items():
        capabilities[kind] = [name for name in names if name not in lacking]
    spec_path.write_text(json.dumps(spec))


def main() -> None:
    args = sys.argv[1:]
    for flag, process_only in (("--bundle", False), ("-b", False), ("--process", True), ("-p", True)):
        if flag in args:
            value = Path(args[args.index(flag) + 1])
            strip(value if process_only else value / "config.json", process_only)
    os.execvp("runc", ["runc", *args])


if __name__ == "__main__":
    main()
