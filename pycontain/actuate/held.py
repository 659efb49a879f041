"""What the controller reads of a process the kernel holds at exec (issue 11).

The process is stopped before its first instruction, so /proc/PID/cmdline
is still exactly the argv the kernel laid out and /proc/PID/exe the file it
runs: neither can have been rewritten by the program yet. Plain reads of
/proc; no library offers these.
"""

from __future__ import annotations

import fcntl
import os

NS_GET_USERNS = 0xB701     # linux/nsfs.h _IO(0xb7, 0x1): the user namespace owning a namespace
CMDLINE_MAX = 1 << 20      # ARG_MAX-sized argv is 2 MiB at most; a bigger one fails closed


def full_argv(pid: int, proc_root: str = "/proc") -> tuple[bytes, ...] | None:
    """The whole argv of a held process, or None (gone, unreadable, too long)."""
    try:
        with open(f"{proc_root}/{pid}/cmdline", "rb") as fh:
            data = fh.read(CMDLINE_MAX + 1)
    except OSError:
        return None
    if len(data) > CMDLINE_MAX:
        return None
    return tuple(data.rstrip(b"\0").split(b"\0")) if data else ()


def real_path(pid: int, proc_root: str = "/proc") -> bytes:
    """The kernel's path of the file the process runs (b"" if unreadable)."""
    try:
        return os.fsencode(os.readlink(f"{proc_root}/{pid}/exe"))
    except OSError:
        return b""


def own_mounts(pid: int, proc_root: str = "/proc") -> bool:
    """Whether the process's mount namespace is owned by a user namespace
    other than the controller's (unshare -Urm): there it may mount over any
    path at any time, whatever the owners of the directories, so no path the
    controller checks here is the one it will open."""
    fd = os.open(f"{proc_root}/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        owner = fcntl.ioctl(fd, NS_GET_USERNS)
    finally:
        os.close(fd)
    try:
        return os.fstat(owner).st_ino != os.stat("/proc/self/ns/user").st_ino
    finally:
        os.close(owner)
