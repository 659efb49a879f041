"""What /proc says about test processes, read from outside them."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """Running (a zombie has ended: it only waits for its parent)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def children(ppid: int, marker: bytes, prefix: bool = False) -> list[int]:
    """Children of `ppid` whose command line holds `marker` (starts with it: `prefix`)."""
    out = []
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/stat", "rb") as fh:
                stat = fh.read()
            with open(f"/proc/{d}/cmdline", "rb") as fh:
                cmd = fh.read()
        except OSError:
            continue
        matched = cmd.startswith(marker) if prefix else marker in cmd
        if matched and int(stat.rsplit(b")", 1)[1].split()[1]) == ppid:
            out.append(int(d))
    return out
