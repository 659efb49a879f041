"""The native start path: subprocess.Popen whose child is a vfork child of
the C module _spawn (joins the cgroups, drops privileges, execs) instead of a
fork of this Python process running a preexec_fn.

Same steps and order as the Python path in actuate/launch.py; the child runs
no Python, so a start costs the exec and the kernel's work, not a copy of the
interpreter (docs/benchmarks.md, "Many agents on one daemon"). The Popen
object is a real subprocess.Popen (pipes, wait, communicate, signals): only
how the child is made differs.

`PYCONTAIN_SPAWN=python` forces the Python path (comparisons, a suspected
bug in the native one); without the built module (no C compiler at install
time) the Python path is used.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core.policy import Privileges
from .privileges import DROPPED_CAPS, build_filter

try:
    from . import _spawn  # type: ignore[attr-defined]
except ImportError:          # not built: no compiler or Python headers at install time
    _spawn = None

# Popen arguments that change the child; the native child implements none of
# them, so a launch that passes one takes the Python path
PYTHON_ONLY = frozenset({"pass_fds", "user", "group", "extra_groups", "umask", "process_group",
                         "restore_signals", "shell", "preexec_fn", "close_fds", "start_new_session"})


def native_available() -> bool:
    return _spawn is not None and os.environ.get("PYCONTAIN_SPAWN", "native") != "python"


def usable_for(popen: dict) -> bool:
    return native_available() and not PYTHON_ONLY & popen.keys()


_FILTER_LOCK = threading.Lock()


def seccomp_bpf(priv: Privileges) -> bytes | None:
    """The policy's seccomp filter as BPF instructions (libseccomp builds and
    exports it once; the child loads the bytes with prctl). Under a lock: a
    rollout worker's 32 threads starting agents at once would otherwise all
    miss the cache and build it 32 times over."""
    with _FILTER_LOCK:
        return _seccomp_bpf(priv)


@functools.lru_cache(maxsize=8)
def _seccomp_bpf(priv: Privileges) -> bytes | None:
    filt = build_filter(priv)
    if filt is None:
        return None
    r, w = os.pipe()
    try:
        with open(w, "wb", closefd=True) as fh:
            filt.export_bpf(fh)
        return os.read(r, 1 << 20)
    finally:
        os.close(r)


@dataclass(frozen=True)
class ChildPlan:
    """What the child does between vfork and exec (all computed in the parent)."""

    procs_files: tuple[str, ...]                          # v1 first, v2 last
    caps: tuple[int, ...]                                 # bounding set to drop
    creds: tuple[int, int, tuple[int, ...]] | None        # uid, gid, groups
    home: str | None                                      # cwd if the caller's is closed to uid
    no_new_privs: bool
    filter: bytes | None

    @classmethod
    def of(cls, procs_files: list[str], priv: Privileges, creds: tuple | None,
           home: str | None) -> ChildPlan:
        drop = priv.drop_capabilities and os.geteuid() == 0    # needs CAP_SETPCAP
        return cls(tuple(procs_files), tuple(DROPPED_CAPS.values()) if drop else (),
                   (creds[0], creds[1], tuple(creds[2])) if creds else None,
                   home if creds else None, priv.no_new_privs, seccomp_bpf(priv))


class StartFailed(subprocess.SubprocessError):
    """A step before exec failed in the child (it has exited, nothing ran)."""


class NativePopen(subprocess.Popen):
    """subprocess.Popen started by _spawn (only its _execute_child differs)."""

    def __init__(self, args: list[str], plan: ChildPlan, **popen: Any):
        self._plan = plan
        super().__init__(args, **popen)

    def _execute_child(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env,
                       startupinfo, creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite,
                       errread, errwrite, *_ignored) -> None:
        p = self._plan
        env_list = _env_bytes(os.environ if env is None else env)
        exe = executable or args[0]
        try:
            pid, step, err, index = _spawn.spawn(
                exe, list(args), env_list, cwd, (p2cread, c2pwrite, errwrite), p.procs_files, p.caps,
                p.creds, p.home, p.no_new_privs, p.filter, os.sysconf("SC_OPEN_MAX"))
        finally:
            self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)  # type: ignore[attr-defined]
        if step is None:
            self.pid = pid
            self._child_created = True
            return
        os.waitpid(pid, 0)           # it exited at the failed step: reap it
        raise _failure(step, err, index, exe, cwd, p)


_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


def _env_bytes(env: Mapping[str, str]) -> list[bytes]:
    """KEY=VALUE as execve takes them (as os.fsencode would, one encode a
    variable: this runs per start; the C side rejects NUL bytes)."""
    out = []
    for k, v in env.items():
        if "=" in k:
            raise ValueError(f"illegal environment variable name {k!r}")
        out.append(f"{k}={v}".encode(_FS_ENCODING, _FS_ERRORS))
    return out


def _failure(step: str, err: int, index: int, exe: str, cwd: str | None, p: ChildPlan) -> Exception:
    if step == "exec":
        return OSError(err, os.strerror(err), exe)     # OSError picks the subclass (FileNotFoundError, ...)
    if step == "cwd":
        return OSError(err, os.strerror(err), cwd)
    where = {"cgroup": lambda: f"joining {p.procs_files[index]}",
             "capbset": lambda: f"dropping capability {index} from the bounding set"}.get(step, lambda: step)()
    return StartFailed(f"{where}: {os.strerror(err)}")
