"""Whether exec.trusted admits a held #! script (issue 11 part 5).

The kernel judges the file an exec runs; for a `#!` script that is the
interpreter, trusted, while the script it will read is whatever the agent
wrote. So under exec.trusted the kernel holds a script exec (ebpf/exec.c,
sched_prepare_exec: binfmt rewrote the interpreter; PC_F_SCRIPT) and this
module judges the script as the interpreter will open it: its path from the
exec (relative to the held process's working directory), resolved here
component by component. Admitted only when the agent cannot change what that
path opens between this check and the interpreter's open, nor wrote it:
every directory on the way (symbolic links followed, their targets too) owned
by root and not writable by group or others, no step through /proc (an
fd path names the controller's descriptors here), the file itself a regular
file owned by root, not group/other writable, not modified since the agent
started, and its real path under an exec.trusted prefix. The path is walked
through /proc/PID/root, in the process's own mounts; a process whose mount
namespace belongs to another user namespace (unshare -Urm) can mount over
any path after the check and is refused. Anything else, or anything
unreadable, is a reason to kill it: fail closed.

Hand-written: os.path.realpath would follow the links without the owner
checks on each directory it passes, which are the point here.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence

from ..core.events import ExecEvent, Flag
from ..core.text import safe_text
from .held import own_mounts

MAX_LINKS = 40                 # the kernel's own limit on links followed in one lookup


class Untrusted(Exception):
    """Why the script is not admitted."""


def _agent_proof(path: bytes, st: os.stat_result) -> None:
    if st.st_uid != 0 or st.st_mode & 0o022:
        raise Untrusted(f"{safe_text(path, 256)} is writable by others than root (uid {st.st_uid}, "
                        f"mode {stat.S_IMODE(st.st_mode):o})")


def resolve(path: bytes, proc_dev: int, root: bytes = b"") -> tuple[bytes, os.stat_result]:
    """The real path of an absolute path and the lstat of what it names,
    checking every directory passed on the way (and the root). root: a
    process's /proc/PID/root, so that its mounts are the ones walked."""
    st = os.lstat(root + b"/")
    _agent_proof(b"/", st)
    todo = [p for p in path.split(b"/") if p]
    real: list[bytes] = []
    links = 0
    while todo:
        name = todo.pop(0)
        if name == b".":
            continue
        if name == b"..":
            real = real[:-1]
            continue
        cur = b"/" + b"/".join([*real, name])
        st = os.lstat(root + cur)
        if st.st_dev == proc_dev:
            raise Untrusted(f"{safe_text(path, 256)} goes through /proc")
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_LINKS:
                raise Untrusted(f"{safe_text(path, 256)}: too many symbolic links")
            target = os.readlink(root + cur)
            real = [] if target.startswith(b"/") else real
            todo = [p for p in target.split(b"/") if p] + todo
            continue
        real.append(name)
        if todo:
            if not stat.S_ISDIR(st.st_mode):
                raise Untrusted(f"{safe_text(cur, 256)} is not a directory")
            _agent_proof(cur, st)
    return b"/" + b"/".join(real), st


def _under(real: bytes, prefixes: Sequence[str]) -> bool:
    for p in prefixes:
        pre = os.fsencode(os.path.realpath(p)).rstrip(b"/")
        if real == pre or real.startswith(pre + b"/"):
            return True
    return False


def _path(ev: ExecEvent, proc_root: str, proc_dev: int) -> tuple[bytes, bytes]:
    """The process's root and the script's absolute path in it, as its
    interpreter will open it."""
    if ev.h.flags & Flag.FILENAME_TRUNCATED:
        raise Untrusted("script path longer than the kernel reads")
    pid = ev.h.pid
    if own_mounts(pid, proc_root):
        raise Untrusted("the process has its own mount namespace (it may mount over the script)")
    root = os.fsencode(f"{proc_root}/{pid}/root")
    if ev.filename.startswith(b"/"):
        return root, ev.filename
    cwd = os.fsencode(os.readlink(f"{proc_root}/{pid}/cwd"))
    real_cwd, st = resolve(cwd, proc_dev, root)
    here = os.stat(f"{proc_root}/{pid}/cwd")
    if (st.st_dev, st.st_ino) != (here.st_dev, here.st_ino) or not stat.S_ISDIR(st.st_mode):
        raise Untrusted("working directory not reachable by its path")
    _agent_proof(real_cwd, st)
    return root, real_cwd + b"/" + ev.filename


def script_verdict(ev: ExecEvent, trusted: Sequence[str], since_s: float | None, proc_root: str = "/proc") -> str:
    """"" when exec.trusted admits the script of held exec ev, else why not."""
    if since_s is None:
        return "agent start time unknown"
    try:
        proc_dev = os.stat("/proc").st_dev
        root, path = _path(ev, proc_root, proc_dev)
        real, st = resolve(path, proc_dev, root)
        if not stat.S_ISREG(st.st_mode):
            raise Untrusted(f"script {safe_text(real, 256)} is not a regular file")
        _agent_proof(real, st)
        if int(st.st_mtime) >= int(since_s):
            raise Untrusted(f"script {safe_text(real, 256)} was modified since the agent started")
        if not _under(real, trusted):
            raise Untrusted(f"script {safe_text(real, 256)} is not under an exec.trusted path")
    except Untrusted as e:
        return f"untrusted #! script: {e}"
    except OSError as e:
        return f"untrusted #! script: {safe_text(ev.filename, 256)} not checkable ({e.strerror})"
    return ""
