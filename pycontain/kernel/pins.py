"""Enforcement that outlives the daemon: BPF links pinned in bpffs.

A BPF program runs only while something holds its attachment. BCC attaches
tracepoints through perf-event fds and raw tracepoints through link fds, all
owned by the daemon process: when it exits or is SIGKILLed, the kernel
detaches them and every agent runs free. A *pinned* BPF link is held by
bpffs instead, so the program, and the maps it uses, stay attached with no
process at all. Hence, in daemon mode:

* tracepoint programs are attached with BPF_LINK_CREATE on a perf event of
  the tracepoint (attach type BPF_PERF_EVENT, kernel >= 5.15) and the link is
  pinned; BCC's own perf attachment is then dropped;
* raw tracepoint fds are links already (BPF_RAW_TRACEPOINT_OPEN): pinned;
* cgroup programs are attached to agent cgroups with BPF_LINK_CREATE (links
  coexist with other tools' BPF_F_ALLOW_MULTI programs) and pinned.

Every daemon start pins into a new *generation* directory under the pin root
($PYCONTAIN_BPFFS, default /sys/fs/bpf/pycontain). Taking over is: attach
this generation, track every agent (the scan and the adopted list), then
retire older generations: the old and new programs overlap for a moment,
there is no gap. `pycontain daemon --release` removes the whole root.

Hand-written with ctypes because BCC 0.26 exposes neither BPF_LINK_CREATE nor
BPF_OBJ_PIN for links, and no maintained Python binding does (libbpf's Python
bindings do not exist; pyroute2 has no BPF link support).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import platform
import re
import shutil
import struct
import time

from ..core.errors import EnvironmentProblem

log = logging.getLogger(__name__)

DEFAULT_ROOT = "/sys/fs/bpf/pycontain"
BPFFS_MOUNT = "/sys/fs/bpf"
ENV = "PYCONTAIN_BPFFS"

# uapi enum bpf_cmd / bpf_attach_type (stable kernel ABI)
BPF_OBJ_PIN, BPF_OBJ_GET, BPF_LINK_CREATE = 6, 7, 28
BPF_PERF_EVENT = 41
PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_ATTR_SIZE = 128

_SYSCALLS = {"x86_64": (321, 298), "aarch64": (280, 241)}   # (bpf, perf_event_open)
_GEN = re.compile(r"^gen-\d+-\d+$")
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def pin_root() -> str:
    return os.environ.get(ENV) or DEFAULT_ROOT


def _nr(which: int) -> int:
    nrs = _SYSCALLS.get(platform.machine())
    if nrs is None:
        raise EnvironmentProblem(f"BPF pinning: unknown syscall numbers on {platform.machine()}")
    return nrs[which]


def _bpf(cmd: int, attr: bytes) -> int:
    buf = ctypes.create_string_buffer(attr, len(attr))
    ret = _libc.syscall(_nr(0), ctypes.c_int(cmd), buf, ctypes.c_uint(len(attr)))
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return int(ret)


def obj_pin(fd: int, path: str) -> None:
    p = ctypes.create_string_buffer(path.encode())
    _bpf(BPF_OBJ_PIN, struct.pack("=QII", ctypes.addressof(p), fd, 0).ljust(24, b"\0"))


def obj_get(path: str) -> int:
    p = ctypes.create_string_buffer(path.encode())
    return _bpf(BPF_OBJ_GET, struct.pack("=QII", ctypes.addressof(p), 0, 0).ljust(24, b"\0"))


def link_create(prog_fd: int, target_fd: int, attach_type: int) -> int:
    """A BPF link of ``prog_fd`` to ``target_fd`` (a cgroup or perf event fd)."""
    return _bpf(BPF_LINK_CREATE, struct.pack("=IIII", prog_fd, target_fd, attach_type, 0).ljust(64, b"\0"))


def tracepoint_id(category: str, name: str) -> int:
    for d in ("/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"):
        try:
            with open(f"{d}/{category}/{name}/id") as fh:
                return int(fh.read())
        except OSError:
            continue
    raise EnvironmentProblem(f"tracepoint {category}:{name} not found in tracefs")


def perf_tracepoint_fd(category: str, name: str) -> int:
    attr = struct.pack("=IIQQ", PERF_TYPE_TRACEPOINT, PERF_ATTR_SIZE, tracepoint_id(category, name), 1)
    attr = attr.ljust(PERF_ATTR_SIZE, b"\0")
    buf = ctypes.create_string_buffer(attr, len(attr))
    # pid -1, cpu 0: a tracepoint program runs on every CPU (as libbpf attaches it)
    ret = _libc.syscall(_nr(1), buf, ctypes.c_int(-1), ctypes.c_int(0), ctypes.c_int(-1),
                        ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC))
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"perf_event_open {category}:{name}: {os.strerror(e)}")
    return int(ret)


# ---- bpffs --------------------------------------------------------------------

def _mount_of(path: str, mountinfo: str = "/proc/self/mountinfo") -> tuple[str, str]:
    """(mount point, fs type) of the deepest mount containing ``path``."""
    best = ("/", "")
    with open(mountinfo) as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            point = left.split()[4].replace("\\040", " ")
            fstype = right.split(" ", 1)[0]
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[0]):
                best = (point, fstype)
    return best


def ensure_bpffs(root: str) -> None:
    """Make ``root`` a directory on a bpffs, mounting one at /sys/fs/bpf (or
    at ``root`` itself when it lies elsewhere) when none is there."""
    if _mount_of(root)[1] != "bpf":
        target = BPFFS_MOUNT if (root + "/").startswith(BPFFS_MOUNT + "/") else root
        os.makedirs(target, exist_ok=True)
        if _libc.mount(b"bpf", target.encode(), b"bpf", 0, None) != 0:
            e = ctypes.get_errno()
            raise EnvironmentProblem(f"cannot mount bpffs at {target}: {os.strerror(e)}",
                                     hint="mount -t bpf bpf /sys/fs/bpf, or set PYCONTAIN_BPFFS to a bpffs dir")
    os.makedirs(root, exist_ok=True)


class PinDir:
    """One generation of pinned links under the pin root."""

    def __init__(self, root: str | None = None):
        self.root = os.path.abspath(root or pin_root())
        ensure_bpffs(self.root)
        self.older = self.generations()
        self.path = os.path.join(self.root, f"gen-{time.time_ns()}-{os.getpid()}")
        os.mkdir(self.path)

    def generations(self) -> list[str]:
        try:
            return sorted(os.path.join(self.root, n) for n in os.listdir(self.root) if _GEN.match(n))
        except FileNotFoundError:
            return []

    def pin(self, fd: int, name: str) -> str:
        path = os.path.join(self.path, name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        obj_pin(fd, path)
        return path

    def unpin(self, name: str) -> None:
        try:
            os.unlink(os.path.join(self.path, name))
        except FileNotFoundError:
            pass

    def retire_older(self) -> list[str]:
        """Remove the generations pinned before this one (their links detach
        as the pins go). Call once this generation enforces everything."""
        gone = []
        for g in self.older:
            remove_tree(g)
            gone.append(g)
        self.older = []
        return gone


def remove_tree(path: str) -> None:
    """Unpin everything under ``path`` (bpffs allows unlink and rmdir)."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise


def release_all(root: str | None = None) -> list[str]:
    """`pycontain daemon --release`: unpin every generation; the kernel
    detaches the programs once no running daemon holds them either."""
    root = os.path.abspath(root or pin_root())
    if not os.path.isdir(root):
        return []
    gens = [os.path.join(root, n) for n in sorted(os.listdir(root))]
    for g in gens:
        remove_tree(g)
    try:
        os.rmdir(root)
    except OSError:
        pass
    return gens
