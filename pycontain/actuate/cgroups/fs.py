"""Small file helpers for cgroupfs.

Kept in one place so unit tests can run the same code over a fake tree in a
temporary directory (they replace :func:`make_dir` to populate new dirs the way
the kernel does).
"""

from __future__ import annotations

import errno
import os
import time


def read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def read_or(path: str, default: str | None = None) -> str | None:
    try:
        return read(path)
    except OSError:
        return default


def write(path: str, value: str | int) -> None:
    """One write(2) of the whole value: cgroupfs parses each write on its own.
    No O_CREAT: a missing file means a missing controller, not a file to make."""
    data = str(value).encode()
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def make_dir(path: str) -> None:
    os.mkdir(path, 0o755)


def remove_dir(path: str) -> None:
    # cgroupfs: rmdir of a cgroup dir removes its control files with it
    os.rmdir(path)


def keyed(text: str | None) -> dict[str, int]:
    """``key value`` lines (cpu.stat, memory.events, cgroup.events) -> dict."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def subtree(path: str) -> list[str]:
    """`path` and every cgroup below it, parents first."""
    out = []
    for dirpath, _dirs, _files in os.walk(path):
        out.append(dirpath)
    return out


def procs(path: str) -> list[int]:
    text = read_or(os.path.join(path, "cgroup.procs"), "") or ""
    return [int(x) for x in text.split() if x.isdigit()]


def subtree_procs(path: str) -> list[int]:
    seen: list[int] = []
    for d in subtree(path):
        for p in procs(d):
            if p not in seen:
                seen.append(p)
    return seen


def remove_tree(path: str, deadline: float) -> None:
    """rmdir `path` and its children, children first; missing is fine.
    EBUSY (a process still exiting) is retried until `deadline`."""
    if not os.path.isdir(path):
        return
    for d in reversed(subtree(path)):
        while True:
            try:
                remove_dir(d)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno in (errno.EBUSY, errno.ENOTEMPTY) and time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                raise
