"""The exec maps of issue 11 that the controller writes: held execs, the
agents' start times, and the directories exec.trusted admits.

A held exec (ebpf/exe.bpf.h pc_hold_current) is a process the kernel
stopped at exec until user space decides. Releasing it is two steps in this
order: delete it from pc_exec_held (so the syscall gate in exec_map.c no
longer kills it), then SIGCONT. The gate marks an entry whose execve has
returned (HELD_RETURNED); that mark is not part of the hold's time. pc_exec_holds[1] counts the holds user space
settled; while it trails the kernel's count [0], the gate looks up each
system call's task.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Iterable
from typing import Any

HOLDS_MADE, HOLDS_SETTLED = 0, 1
# ebpf/exe.bpf.h PC_HELD_AT_BIRTH: a child born outside its agent's cgroup,
# killed by the kernel; only ever killed and settled here, never released
HELD_AT_BIRTH = 1 << 63
# ebpf/exe.bpf.h PC_HELD_RETURNED: the held exec's own execve has returned
HELD_RETURNED = 1 << 62
_MARKS = HELD_AT_BIRTH | HELD_RETURNED


def kernel_dev(st_dev: int) -> int:
    """st_dev as the kernel stores it in super_block.s_dev (major << 20 | minor)."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


def write_trusted_dirs(table: Any, paths: Iterable[str]) -> None:
    """(dev, inode) of each exec.trusted path, as it is now; a path that does
    not exist admits nothing. New entries first, then stale ones go."""
    want = set()
    for p in paths:
        try:
            st = os.stat(os.path.realpath(p))
        except OSError:
            continue
        want.add((kernel_dev(st.st_dev), st.st_ino))
    for dev, ino in want:
        k = table.Key()
        k.dev, k.ino = dev, ino
        table[k] = ctypes.c_uint32(1)
    for k in list(table.keys()):
        if (int(k.dev), int(k.ino)) not in want:
            try:
                del table[k]
            except KeyError:
                pass


def set_agent_since(table: Any, agent_id: int, wall: float | None = None) -> None:
    table[ctypes.c_uint32(agent_id)] = ctypes.c_int64(int(wall if wall is not None else time.time()))


def _bump_settled(bpf: Any) -> None:
    t = bpf[b"pc_exec_holds"]
    cur = int(t[ctypes.c_int(HOLDS_SETTLED)].value)
    t[ctypes.c_int(HOLDS_SETTLED)] = ctypes.c_uint64(cur + 1)


def settle(bpf: Any, pid: int) -> bool:
    if bpf is None:
        return False
    try:
        del bpf[b"pc_exec_held"][ctypes.c_uint32(pid)]
    except KeyError:
        return False
    _bump_settled(bpf)
    return True


def release(bpf: Any, pid: int) -> bool:
    if bpf is None:
        return False
    try:
        since = int(bpf[b"pc_exec_held"][ctypes.c_uint32(pid)].value)
    except KeyError:
        return False
    if since & HELD_AT_BIRTH:   # born outside its agent: killed, never let go (the hold timeout settles it)
        return False
    if not settle(bpf, pid):
        return False
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        return False
    return True


def held(bpf: Any) -> dict[int, int]:
    """Held tgid -> boot ns of the hold (the marks removed, so the hold
    timeout kills and settles an entry held at birth too)."""
    if bpf is None:
        return {}
    return {int(k.value): int(v.value) & ~_MARKS for k, v in bpf[b"pc_exec_held"].items()}
