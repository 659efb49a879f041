"""Run `ssh -G` as a held ssh exec's agent would (issue 12 part 7).

The exec is stopped before its first instruction (issue 11's hold), so
/proc/PID still describes exactly what would run: its uid, gids, environment
and working directory. `ssh -G` with the same options and destination
prints the effective client configuration (-F files, ~/.ssh/config, Include,
Match) without connecting; core/ssh_forwarding.py judges it.

The query runs the node's OpenSSH client (/usr/bin/ssh or /bin/ssh), never
the file the agent executed (that may be the agent's own program, and the
query runs outside the agent's cgroup), with only the environment variables
a configuration may use and none the loader or libcrypto read (LD_PRELOAD,
OPENSSL_CONF would run the agent's code here).
`Match exec "cmd"` in a config makes ssh run a command. That command must not
run outside the agent's cgroup, so the query runs under a seccomp filter
(libseccomp's Python bindings, python3-seccomp) that refuses fork, vfork and
clone: ssh cannot start anything, the Match fails, and it cannot make a
configuration look safer than the real run (which will be judged again if it
execs ssh). Unreadable /proc, a timeout, or an ssh that fails all return None
and the caller denies: fail closed. So does a process in a mount namespace
of its own user namespace (unshare -Urm): it can bind any file over the
configuration paths that the query reads in the node's namespace.

The query runs as the agent's uid outside its cgroup, so no process of that
uid may take it over (open /proc/PID/mem, ptrace, process_vm_writev): it runs
with effective and saved gid QUERY_GID, the agent's gid kept as real and
supplementary group, so it reads the same files. The kernel then refuses
the agent on two counts: __ptrace_may_access wants the caller's gid equal to
the target's gid, egid and sgid, and an exec with egid != gid leaves the
process non-dumpable. A -F file, ~/.ssh/config or /etc/ssh/ssh_config that
is not a regular file (a FIFO would block ssh until the timeout, in the
controller's ring callback) is refused before any query runs; /dev/null
(`-F /dev/null`) is allowed. A FIFO reached through Include, or a file
swapped for one after that check, still costs TIMEOUT_S (fail closed).
"""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import stat
import subprocess
from typing import Any

from ..core.events import ExecEvent
from ..core.policy_args import SSH_NAMES
from ..core.ssh_forwarding import QUERY_MAX, argv_violation, config_query, config_violation
from .held import own_mounts
from .ssh_config_cache import AnswerCache, Uncacheable, config_roots, fingerprint

SYSTEM_SSH_PATH = "/usr/bin:/bin"
ENV_KEEP = (b"HOME", b"USER", b"LOGNAME", b"PATH", b"SHELL", b"TERM", b"LANG", b"TZ", b"XDG_RUNTIME_DIR",
            b"SSH_AUTH_SOCK")
TIMEOUT_S = 1.0        # below the controller's 2 s hold timeout; -G does not connect
# effective and saved gid of the query: one no account, file or agent process has,
# so no process of the agent's uid matches it (the kernel accepts any gid value)
QUERY_GID = 0x7FFF_FFFD
DEV_NULL = os.makedev(1, 3)
ANSWERS = AnswerCache()


def _ids(pid: int, proc_root: str) -> tuple[int, int, list[int]] | None:
    uid = gid = -1
    groups: list[int] = []
    with open(f"{proc_root}/{pid}/status", encoding="ascii", errors="replace") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            fields = rest.split()
            if key == "Uid" and fields:
                uid = int(fields[0])
            elif key == "Gid" and fields:
                gid = int(fields[0])
            elif key == "Groups":
                groups = [int(g) for g in fields]
    return (uid, gid, groups) if uid >= 0 and gid >= 0 else None


def _environ(pid: int, proc_root: str) -> dict[bytes, bytes]:
    with open(f"{proc_root}/{pid}/environ", "rb") as fh:
        data = fh.read(1 << 20)
    env = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and (key in ENV_KEEP or key.startswith(b"LC_")):
            env[key] = value
    return env


def _no_fork_filter() -> Any:
    """A seccomp filter refusing fork, vfork and clone. Built in the parent
    (the child only loads it, after CPython switched to the agent's ids; with
    no_new_privs it stays through the exec of ssh)."""
    import seccomp  # python3-seccomp (apt)
    f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in ("fork", "vfork", "clone", "clone3"):
        f.add_rule(seccomp.ERRNO(errno.EPERM), name)
    return f


def _passwd_entry(uid: int) -> tuple[str, str, str] | None:
    """Name, home and shell of uid; None when there is no entry: OpenSSH
    exits at start ("No user exists for uid") before reading any
    configuration (pycontain's dynamic uids have no entry), so such an ssh
    cannot set up a forward from a file."""
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return None
    return pw.pw_name, pw.pw_dir, pw.pw_shell


def effective_config(pid: int, query: list[str], proc_root: str = "/proc") -> str | None:
    """`ssh -G` output for the held process pid, run with its ids, environment
    and working directory; None when it cannot be had, "" when OpenSSH would
    not read a configuration for that uid at all. An answer for the same fingerprint
    (ssh_config_cache: arguments, ids, environment and every file read) is
    reused; a fresh one is kept only when the files did not change while
    ssh read them."""
    try:
        if own_mounts(pid, proc_root):
            return None     # its files are not the ones the query would read
        ids = _ids(pid, proc_root)
        env = _environ(pid, proc_root)
        cwd = os.readlink(f"{proc_root}/{pid}/cwd")
        cwd = cwd if os.path.isdir(cwd) else "/"
    except (OSError, ValueError):
        return None
    if ids is None:
        return None
    pw = _passwd_entry(ids[0])
    if pw is None:
        return ""
    ssh_path = shutil.which("ssh", path=SYSTEM_SSH_PATH)
    if ssh_path is None or not _plain_roots(query, pw[1], cwd):
        return None
    key = fingerprint(query, ids, env, cwd, pw, ssh_path)
    out = ANSWERS.get(key)
    if out is None:
        out = _run_query(ssh_path, query, ids, env, cwd)
        if out is not None and key == fingerprint(query, ids, env, cwd, pw, ssh_path):
            ANSWERS.put(key, out)
    return out


def _plain_roots(query: list[str], pw_dir: str, cwd: str) -> bool:
    """False when a file ssh opens first (-F, or ~/.ssh/config and the system
    file) is there but is neither a regular file nor /dev/null: a FIFO would
    hold ssh, and the controller's ring callback with it, until TIMEOUT_S; a
    device could be read for ever. Stat only, it never blocks. Absent or
    unreachable files are left to ssh, which reports them itself."""
    try:
        roots = config_roots(query, pw_dir, cwd)
    except Uncacheable:         # `-F ~...`: ssh expands it, the query judges it
        return True
    for path, _ in roots:
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            continue
        if not (stat.S_ISREG(st.st_mode) or (stat.S_ISCHR(st.st_mode) and st.st_rdev == DEV_NULL)):
            return False
    return True


def _as_agent(uid: int, gid: int, no_fork: Any):
    """The query child's last steps before exec (subprocess already set the
    supplementary groups, the agent's gid among them): real gid the agent's,
    effective and saved QUERY_GID, so no process of the agent's uid may trace
    or write the query's memory; then the agent's uid and the no-fork filter."""
    def become() -> None:
        os.setresgid(gid, QUERY_GID, QUERY_GID)
        os.setresuid(uid, uid, uid)
        no_fork.load()
    return become


def _run_query(ssh_path: str, query: list[str], ids: tuple[int, int, list[int]], env: dict[bytes, bytes],
               cwd: str) -> str | None:
    uid, gid, groups = ids
    if gid == QUERY_GID:
        return None             # the barrier would not hold: fail closed
    try:
        no_fork = _no_fork_filter()
        r = subprocess.run([ssh_path, *query], env=env, cwd=cwd,
                           extra_groups=sorted({*groups, gid}), preexec_fn=_as_agent(uid, gid, no_fork),
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError, ValueError, ImportError, RuntimeError):
        return None
    if r.returncode != 0:
        return None
    return r.stdout[:QUERY_MAX].decode("utf-8", errors="replace")


def ssh_forward(ev: ExecEvent) -> str:
    """The forwarding a held exec of ssh would set up, as a reason ("" for a
    plain session or another program). The name of the file that runs
    decides, not argv[0]; the node's OpenSSH resolves its configuration."""
    path = os.fsdecode(ev.real_path or ev.filename)
    if os.path.basename(path) not in SSH_NAMES:
        return ""
    args = [os.fsdecode(a) for a in ev.argv[1:]]
    why = argv_violation(args)
    query = config_query(args)
    if why or query is None:
        return why or ""
    out = effective_config(ev.h.pid, query)
    if out == "":
        return ""
    return config_violation(out or "") or ""
