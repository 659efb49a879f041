"""What BPF program kinds this kernel accepts, probed in milliseconds.

Each probe loads a two-instruction program ("r0 = 1; exit") of one program
type with the raw bpf(2) syscall via ctypes and closes it at once: no BCC
compile. A kernel that refuses the load (EINVAL: type unknown, EPERM: locked
down or LSM not enabled) reports that hook as unavailable with the reason.
The strongest exec enforcement that loads is chosen: "lsm" (deny in
bprm_check_security) else "tracepoint+send_signal" (SIGKILL from
sched_process_exec before the new image runs an instruction).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import re
import struct
from dataclasses import dataclass, field

_NR_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351}.get(platform.machine(), 321)

BPF_MAP_CREATE, BPF_PROG_LOAD = 0, 5
BPF_MAP_TYPE_RINGBUF = 27
PROG_KPROBE, PROG_TRACEPOINT, PROG_CGROUP_SKB, PROG_CGROUP_SOCK = 2, 5, 8, 9
PROG_RAW_TRACEPOINT, PROG_CGROUP_SOCK_ADDR, PROG_LSM = 17, 18, 29
ATTACH_INET_EGRESS, ATTACH_INET_SOCK_CREATE, ATTACH_INET4_CONNECT, ATTACH_LSM_MAC = 1, 2, 10, 27

# r0 = 1 ; exit   (1 is "allow" for every cgroup hook, ignored by tracing ones)
_INSNS = struct.pack("<BBhi", 0xB7, 0, 0, 1) + struct.pack("<BBhi", 0x95, 0, 0, 0)
_LICENSE = ctypes.create_string_buffer(b"GPL")

TRACEFS_DIRS = ("/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events")
TRACEFS_KPROBE_EVENTS = ("/sys/kernel/tracing/kprobe_events", "/sys/kernel/debug/tracing/kprobe_events")
LSM_LIST = "/sys/kernel/security/lsm"


@dataclass
class FeatureReport:
    hooks: dict[str, str] = field(default_factory=dict)   # name -> "available" / "unavailable: why"
    exec_enforcement: str = "tracepoint+send_signal"

    def available(self, hook: str) -> bool:
        return self.hooks.get(hook) == "available"

    def as_dict(self) -> dict:
        return {"hooks": dict(self.hooks), "exec_enforcement": self.exec_enforcement}


_libc = None


def _bpf(cmd: int, attr: bytes) -> tuple[int, int]:
    """bpf(cmd, attr) -> (fd or -1, errno)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    buf = ctypes.create_string_buffer(attr, len(attr))
    fd = _libc.syscall(ctypes.c_long(_NR_BPF), ctypes.c_int(cmd), buf, ctypes.c_uint(len(attr)))
    return int(fd), ctypes.get_errno()


def _why(err: int) -> str:
    return f"unavailable: {os.strerror(err)} ({'EPERM' if err == 1 else 'errno ' + str(err)})"


def _try_prog(prog_type: int, attach_type: int = 0, attach_btf_id: int = 0) -> str:
    insns = ctypes.create_string_buffer(_INSNS, len(_INSNS))
    attr = bytearray(128)
    struct.pack_into("<II", attr, 0, prog_type, len(_INSNS) // 8)
    struct.pack_into("<QQ", attr, 8, ctypes.addressof(insns), ctypes.addressof(_LICENSE))
    struct.pack_into("<I", attr, 68, attach_type)          # expected_attach_type
    struct.pack_into("<I", attr, 108, attach_btf_id)       # attach_btf_id
    fd, err = _bpf(BPF_PROG_LOAD, bytes(attr))
    if fd < 0:
        return _why(err)
    os.close(fd)
    return "available"


def _try_ringbuf() -> str:
    attr = struct.pack("<IIII", BPF_MAP_TYPE_RINGBUF, 0, 0, 4096) + bytes(112)
    fd, err = _bpf(BPF_MAP_CREATE, attr)
    if fd < 0:
        return _why(err)
    os.close(fd)
    return "available"


def _try_kprobe() -> str:
    if not any(os.path.exists(p) for p in TRACEFS_KPROBE_EVENTS):
        return "unavailable: kernel built without kprobe events (no kprobe_events in tracefs)"
    return _try_prog(PROG_KPROBE)


def _try_lsm() -> str:
    try:
        with open(LSM_LIST) as f:
            lsms = f.read().strip().split(",")
    except OSError:
        return f"unavailable: cannot read {LSM_LIST} (securityfs not mounted?)"
    if "bpf" not in lsms:
        return "unavailable: 'bpf' not in the active LSM list (boot with lsm=...,bpf)"
    try:
        from .btf import kernel_btf
        btf_id = kernel_btf().funcs.get("bpf_lsm_bprm_check_security", 0)
    except Exception as e:
        return f"unavailable: no BTF for the LSM hook ({e})"
    if not btf_id:
        return "unavailable: bpf_lsm_bprm_check_security not in BTF"
    return _try_prog(PROG_LSM, ATTACH_LSM_MAC, btf_id)


def tp_has_field(event: str, name: str) -> bool:
    """Whether tracepoint `event` ("sched/sched_process_exit") exists here
    with a field `name` (its tracefs format)."""
    for d in TRACEFS_DIRS:
        try:
            with open(f"{d}/{event}/format") as f:
                return re.search(rf"\b{name};", f.read()) is not None
        except OSError:
            continue
    return False


def _try_exit_mmap() -> str:
    """mmap:exit_mmap (kernel >= 6.1) lets the kernel forget an address
    space's tracked mappings: mprotect(PROT_EXEC) of a file mapping is
    judged only where it exists (ebpf/exec_map.c)."""
    if tp_has_field("mmap/exit_mmap", "mm"):
        return "available"
    return ("unavailable: no mmap:exit_mmap tracepoint (kernel < 6.1): "
            "mprotect(PROT_EXEC) of a mapped file is not judged")


def detect_features() -> FeatureReport:
    """Probe every hook kind pycontain may use. Never raises."""
    probes = {
        "tracepoint": lambda: _try_prog(PROG_TRACEPOINT),
        "raw_tracepoint": lambda: _try_prog(PROG_RAW_TRACEPOINT),
        "kprobe": _try_kprobe,
        "cgroup_sock_addr": lambda: _try_prog(PROG_CGROUP_SOCK_ADDR, ATTACH_INET4_CONNECT),
        "cgroup_skb": lambda: _try_prog(PROG_CGROUP_SKB, ATTACH_INET_EGRESS),
        "cgroup_sock": lambda: _try_prog(PROG_CGROUP_SOCK, ATTACH_INET_SOCK_CREATE),
        "lsm": _try_lsm,
        "exit_mmap_tracepoint": _try_exit_mmap,
        "ringbuf": _try_ringbuf,
    }
    report = FeatureReport()
    for name, probe in probes.items():
        try:
            report.hooks[name] = probe()
        except Exception as e:   # a probe must never take the daemon down
            report.hooks[name] = f"unavailable: probe failed ({e})"
    report.exec_enforcement = "lsm" if report.available("lsm") else "tracepoint+send_signal"
    return report
