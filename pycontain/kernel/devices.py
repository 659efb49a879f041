"""Attach ebpf/device.c (GPU allocation) to agent cgroups.

A BPF object of its own: compiled on first use (only when some agent is
confined to some GPUs), one program attached to each confined agent's cgroup
v2 directory with BPF_F_ALLOW_MULTI (a device program systemd or a container
runtime attached there keeps running: the kernel allows an access only if
every program allows it). The grant is written to the map before the program
is attached, and removed after it is detached, so an attached program always
finds its agent's grant.
"""

from __future__ import annotations

import ctypes
import logging
import os
from typing import Any

from ..core.errors import EnvironmentProblem
from .loader import ebpf_dir

log = logging.getLogger(__name__)

PROG_CGROUP_DEVICE = 15          # uapi enum bpf_prog_type
ATTACH_CGROUP_DEVICE = 6         # uapi enum bpf_attach_type
BPF_F_ALLOW_MULTI = 1 << 1
WORDS = 4                        # struct pc_gpu_grant: 256 minor bits


class Grant(ctypes.Structure):
    _fields_ = [("bits", ctypes.c_uint64 * WORDS)]


def grant_bits(minors) -> Grant:
    g = Grant()
    for m in minors:
        if 0 <= m < 64 * WORDS:
            g.bits[m >> 6] |= 1 << (m & 63)
    return g


class DeviceProgram:
    def __init__(self) -> None:
        self.bpf: Any = None     # bcc.BPF once loaded (bcc ships no types)
        self.fn: Any = None      # its BPF_CGROUP_DEVICE function
        self._attached: dict[str, tuple[int, int]] = {}   # cgroup path -> (fd, cgroup id)

    def load(self) -> None:
        if self.bpf is not None:
            return
        try:
            from bcc import BPF
        except Exception as e:
            raise EnvironmentProblem(f"BCC Python bindings not importable ({e})") from None
        src = (ebpf_dir() / "device.c").read_text()
        try:
            self.bpf = BPF(text=src.encode(), cflags=["-Wno-macro-redefined"])
            self.fn = self.bpf.load_func(b"pc_gpu_device", PROG_CGROUP_DEVICE, attach_type=ATTACH_CGROUP_DEVICE)
        except Exception as e:
            self.bpf = None
            raise EnvironmentProblem(f"the GPU device program failed to load: "
                                     f"{str(e).splitlines()[0] if str(e) else e}") from None

    def confine(self, cgroup_v2_path: str, allowed_minors) -> None:
        """Let tasks of the cgroup (and below) open only `allowed_minors` of /dev/nvidiaN."""
        from bcc import BPF
        self.load()
        path = os.path.realpath(cgroup_v2_path)
        cg_id = os.stat(path).st_ino
        self.bpf[b"pc_gpu_grants"][ctypes.c_uint64(cg_id)] = grant_bits(allowed_minors)
        if path in self._attached:
            return                        # new grant written in place
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            BPF.attach_func(self.fn, fd, ATTACH_CGROUP_DEVICE, BPF_F_ALLOW_MULTI)
        except Exception as e:
            os.close(fd)
            del self.bpf[b"pc_gpu_grants"][ctypes.c_uint64(cg_id)]
            raise EnvironmentProblem(f"cannot attach the GPU device program to {path}: {e}") from None
        self._attached[path] = (fd, cg_id)

    def release(self, cgroup_v2_path: str) -> None:
        path = os.path.realpath(cgroup_v2_path)
        entry = self._attached.pop(path, None) or self._attached.pop(cgroup_v2_path, None)
        if entry is None:
            return
        from bcc import BPF
        fd, cg_id = entry
        try:
            BPF.detach_func(self.fn, fd, ATTACH_CGROUP_DEVICE)
        except Exception as e:            # a removed cgroup took the program with it
            log.debug("detach device program from %s: %s", path, e)
        os.close(fd)
        try:
            del self.bpf[b"pc_gpu_grants"][ctypes.c_uint64(cg_id)]
        except KeyError:
            pass

    def status(self) -> str:
        if self.bpf is None:
            return "not loaded (no agent confined to some GPUs)"
        return f"attached to {len(self._attached)} agent cgroup(s)"

    def close(self) -> None:
        for path in list(self._attached):
            self.release(path)
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None
