"""What the controller reads of a process the kernel holds at exec (issue 11).

The process is stopped before its first instruction, so /proc/PID/cmdline
is still exactly the argv the kernel laid out and /proc/PID/exe the file it
runs: neither can have been rewritten by the program yet. Plain reads of
/proc; no library offers these.
"""

from __future__ import annotations

import os

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
