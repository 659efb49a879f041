"""Start the agent inside its cgroups with no unwatched instant.

The fork child writes its own pid into every cgroup.procs of the agent (v1
ones first, v2 last: the BPF filter keys on the v2 cgroup, so from that write
on every exec, connect and socket of the child is seen, and an agent task
moving in a v1 hierarchy would be a boundary escape) and only then drops
privileges and execs. The first instruction of the agent's program therefore already runs
inside the agent cgroups, under its budgets and its kernel rules.

Two ways to make that child, same steps in the same order: the native one
(actuate/spawn.py: a vfork child of the C module _spawn, no copy of this
Python process) when it was built, else subprocess's fork with a Python
preexec_fn (below).

Privileges are dropped in the same hook (not with Popen's user=/group=, which
run *before* preexec_fn and would leave the child unable to join the cgroups).
Everything the hook needs (paths, group list) is computed in the parent: the
child between fork and exec runs only plain syscalls, no name-service lookups
and no imports, so a lock another controller thread held at fork time cannot
deadlock it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess

from ..core.errors import CommandNotFound, EnvironmentProblem, UsageError
from ..core.policy import Privileges
from .cgroups import AgentCgroup
from .dynamic_user import Identity
from .privileges import build_filter, drop_bounding_set, restrict
from .spawn import ChildPlan, NativePopen, usable_for


def launch(argv: list[str], cgroup: AgentCgroup, *, user: str | None = None,
           env: dict | None = None, cwd: str | None = None,
           privileges: Privileges | None = None, identity: Identity | None = None,
           **popen) -> subprocess.Popen:
    """Start argv in cgroup. `privileges`: what to take from the agent
    (actuate/privileges.py); None: the policy default, everything.
    `identity`: a dynamic uid (actuate/dynamic_user.py) to run as instead of
    `user`; its home is HOME, and the working directory when the caller's is
    closed to it. ``popen``:
    further subprocess.Popen arguments (stdin, stdout, stderr, ...; not
    preexec_fn, start_new_session or close_fds)."""
    if not argv:
        raise UsageError("no command given", "pycontain run [OPTIONS] -- CMD [ARG...]")
    child_env = dict(os.environ if env is None else env)
    creds = None
    if user is not None:
        pw = lookup_user(user)
        creds = (pw.pw_uid, pw.pw_gid, os.getgrouplist(pw.pw_name, pw.pw_gid))
        child_env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
    fallback_dir = None
    if identity is not None and user is None:
        creds = (identity.uid, identity.gid, list(identity.groups))
        child_env.update(HOME=identity.home, USER=identity.name, LOGNAME=identity.name)
        fallback_dir = identity.home
    exe = resolve_command(argv[0], child_env.get("PATH", os.defpath), cwd)
    procs_files = cgroup.procs_files()
    priv = privileges or Privileges()
    try:
        if usable_for(popen):
            plan = ChildPlan.of(procs_files, priv, creds, fallback_dir)
            return NativePopen(argv, plan, executable=exe, env=child_env, cwd=cwd, **popen)
        return _python_launch(argv, exe, procs_files, priv, creds, fallback_dir, child_env, cwd, popen)
    except FileNotFoundError as e:
        raise CommandNotFound(f"{argv[0]}: command not found") from e
    except PermissionError as e:
        raise CommandNotFound(f"{argv[0]}: permission denied") from e
    except OSError as e:
        raise CommandNotFound(f"{argv[0]}: cannot execute: {e.strerror}") from e
    except subprocess.SubprocessError as e:
        # a step before exec failed: the child exited without ever running CMD
        raise EnvironmentProblem(f"could not place the agent in its cgroup {cgroup.v2_path}: {e}") from e


def _python_launch(argv: list[str], exe: str, procs_files: list[str], priv: Privileges, creds: tuple | None,
                   fallback_dir: str | None, child_env: dict, cwd: str | None, popen: dict) -> subprocess.Popen:
    """The fork child runs join_cgroups_then_drop, in Python."""
    filt = build_filter(priv)            # built here: the child only loads it
    have_setpcap = os.geteuid() == 0

    def join_cgroups_then_drop() -> None:
        # runs in the fork child, before exec; plain syscalls only
        signal.pthread_sigmask(signal.SIG_SETMASK, [])   # the controller may block signals in threads
        me = str(os.getpid()).encode()
        for path in procs_files:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, me)
            finally:
                os.close(fd)
        drop_bounding_set(priv, have_setpcap)   # needs CAP_SETPCAP: before the uid changes
        if creds is not None:
            uid, gid, groups = creds
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)       # after it, nothing above would be permitted
            if fallback_dir is not None and not os.access(".", os.X_OK):
                os.chdir(fallback_dir)   # the caller's cwd is closed to a fresh uid
        restrict(priv, filt)     # last: no_new_privs and the seccomp filter

    return subprocess.Popen(argv, executable=exe, env=child_env, cwd=cwd,
                            preexec_fn=join_cgroups_then_drop,
                            start_new_session=True,   # own session + process group
                            close_fds=True,           # only 0, 1, 2 reach the agent
                            **popen)


def lookup_user(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError):
        raise UsageError(f"--user {user!r}: no such user") from None


def resolve_command(prog: str, path: str, cwd: str | None = None) -> str:
    """Resolve like the shell would against the agent's PATH, before anything runs."""
    if "/" in prog:
        full = prog if os.path.isabs(prog) or not cwd else os.path.join(cwd, prog)
        if not os.path.exists(full):
            raise CommandNotFound(f"{prog}: command not found")
        if os.path.isdir(full) or not os.access(full, os.X_OK):
            raise CommandNotFound(f"{prog}: not executable")
        return full
    found = shutil.which(prog, path=path)
    if found is None:
        raise CommandNotFound(f"{prog}: command not found", "check the name, or give a full path")
    return found
