"""A fresh uid per agent (issue 10 part 3), like systemd's DynamicUser=.

`pycontain run` without --user gives the agent a uid of its own, taken from
a configured range (privileges.dynamic_user_range, systemd's 61184-65519 by
default) and given back at exit: the agent cannot signal, ptrace, or reach
the files and unix sockets of any other user on the node, and no two
running agents share a uid.

Allocation (hand-written: systemd's allocator lives in PID 1 and
nss-systemd, neither usable from here): under an exclusive flock on
/run/pycontain/dynamic-users.lock a uid is picked at random from the range
that no passwd or group entry names, no running process holds and no live
lease claims (/run/pycontain/dynamic-users/<uid>, holding the pid of the
pycontain run that took it; a lease whose pid is gone is stale and taken
back). The agent's home and, when the caller's cwd is closed to it, its
working directory, is a private directory /run/pycontain-agents/<uid>
(mode 0700, owned by the uid; outside /run/pycontain, which the daemon
keeps root-only). At release the directory and whatever the uid left in
the shared scratch directories (/tmp, /var/tmp, /dev/shm, /run/lock,
/dev/mqueue: at their top and inside the world-writable sticky directories
there, such as /tmp/.X11-unix) and in System V IPC (ipc_clean.py) are
removed, so the next agent given this uid inherits nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import pwd
import random
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from ..core.errors import EnvironmentProblem
from ..core.policy import Privileges
from .ipc_clean import remove_ipc

RUN_DIR = "/run/pycontain"
HOME_BASE = "/run/pycontain-agents"     # 0711: each agent enters its own directory, lists none
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue")


@dataclass(frozen=True)
class Identity:
    """Who the agent runs as: what launch() switches to."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str
    home: str


@contextlib.contextmanager
def _leases_locked(run_dir: str) -> Iterator[None]:
    """The node-wide lease lock (every run and daemon takes uids under it)."""
    os.makedirs(os.path.join(run_dir, "dynamic-users"), mode=0o700, exist_ok=True)
    lock = os.open(os.path.join(run_dir, "dynamic-users.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock)        # closing releases the flock


def _holder(lease: str) -> int:
    try:
        with open(lease, encoding="ascii") as fh:
            return int(fh.read().strip() or "0")
    except (OSError, ValueError):
        return 0


def _leased(leases: str, home_base: str) -> list[DynamicUser]:
    out = []
    for name in os.listdir(leases):
        if name.isdigit():
            uid = int(name)
            out.append(DynamicUser.of(uid, os.path.join(leases, name), os.path.join(home_base, name)))
    return out


def identity_to_dict(i: Identity) -> dict:
    """The identity in the daemon's start answer (app/agent_api.py)."""
    return {"uid": i.uid, "gid": i.gid, "name": i.name, "home": i.home}


def identity_from_dict(d: dict) -> Identity:
    try:
        uid, gid, name, home = int(d["uid"]), int(d["gid"]), str(d["name"]), str(d["home"])
    except (KeyError, TypeError, ValueError) as e:
        raise EnvironmentProblem(f"the daemon's start answer has no usable identity ({e!r})") from None
    if uid <= 0 or gid <= 0:
        raise EnvironmentProblem(f"the daemon's start answer names uid {uid}, gid {gid}: not a dynamic user")
    return Identity(uid, gid, (), name, home)


def _uids_in_use() -> set[int]:
    """Real, effective, saved and fs uids of every running process."""
    used: set[int] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if line.startswith("Uid:"):
                        used.update(int(x) for x in line.split()[1:])
                        break
        except OSError:
            continue
    return used


def _named(uid: int) -> bool:
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
            return True
        except KeyError:
            pass
    return False


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DynamicUser:
    """One lease: allocate() takes a uid and makes its home, release() gives both back."""

    def __init__(self, identity: Identity, lease: str):
        self.identity, self._lease = identity, lease

    @classmethod
    def of(cls, uid: int, lease: str, home: str) -> DynamicUser:
        """The lease of uid (its own group, no others) with its home."""
        return cls(Identity(uid, uid, (), f"pycontain-{uid}", home), lease)

    @classmethod
    def allocate(cls, uid_range: tuple[int, int], run_dir: str = RUN_DIR) -> DynamicUser:
        return cls.allocate_many(uid_range, 1, run_dir)[0]

    @classmethod
    def allocate_many(cls, uid_range: tuple[int, int], n: int, run_dir: str = RUN_DIR) -> list[DynamicUser]:
        """n distinct uids under one lock and one scan of /proc (the node
        daemon's pool, actuate/identity_pool.py, leases them ahead)."""
        leases = os.path.join(run_dir, "dynamic-users")
        taken: list[tuple[int, str]] = []
        with _leases_locked(run_dir):
            for uid in cls._pick(uid_range, leases, n):
                lease = os.path.join(leases, str(uid))
                with open(lease, "w", encoding="ascii") as fh:
                    fh.write(str(os.getpid()))
                taken.append((uid, lease))
        made: list[DynamicUser] = []
        try:
            for uid, lease in taken:
                made.append(cls.of(uid, lease, cls._make_home(uid, HOME_BASE)))
        except OSError as e:
            for du in made:
                du.release()
            for _, lease in taken[len(made):]:
                os.unlink(lease)
            raise EnvironmentProblem(f"cannot make the agent's private directory: {e}") from None
        return made

    @staticmethod
    def collect_stale(run_dir: str = RUN_DIR, home_base: str = HOME_BASE) -> int:
        """Give back the uids whose lease holder died without releasing them
        (a daemon killed with its pool of 128, a run killed outright): home,
        scratch leftovers, lease. Not a uid a running process still holds
        (an agent a killed daemon started runs on under its pinned programs).
        Returns how many."""
        leases = os.path.join(run_dir, "dynamic-users")
        with _leases_locked(run_dir):
            in_use = _uids_in_use()
            stale = [du for du in _leased(leases, home_base) if du.identity.uid not in in_use
                     and not _pid_alive(_holder(du._lease))]
            DynamicUser.release_many(stale)
        return len(stale)

    @staticmethod
    def _pick(uid_range: tuple[int, int], leases: str, n: int = 1) -> list[int]:
        lo, hi = uid_range
        in_use = _uids_in_use()
        candidates = list(range(lo, hi + 1))
        random.shuffle(candidates)   # a uid just given back is the least likely to come again
        picked: list[int] = []
        for uid in candidates:
            if uid in in_use or _named(uid):
                continue
            if _pid_alive(_holder(os.path.join(leases, str(uid)))):
                continue
            picked.append(uid)
            if len(picked) == n:
                return picked
        raise EnvironmentProblem(f"no free uid in the dynamic-user range {lo}-{hi}" +
                                 (f" for {n} agents" if n > 1 else ""),
                                 hint="widen privileges.dynamic_user_range, or name one with run --user")

    @staticmethod
    def _make_home(uid: int, base: str) -> str:
        os.makedirs(base, mode=0o711, exist_ok=True)
        os.chmod(base, 0o711)     # each agent may enter its own directory, list none
        home = os.path.join(base, str(uid))
        shutil.rmtree(home, ignore_errors=True)
        os.mkdir(home, 0o700)
        os.chown(home, uid, uid)
        return home

    def release(self) -> None:
        """After every process of the agent is gone (its cgroup removed)."""
        DynamicUser.release_many([self])

    @staticmethod
    def release_many(users: list[DynamicUser]) -> None:
        """release() of several, each scratch directory read once for all."""
        for du in users:
            shutil.rmtree(du.identity.home, ignore_errors=True)
        uids = {du.identity.uid for du in users}
        for d in SCRATCH_DIRS:
            remove_owned(d, uids)
        remove_ipc(uids)
        for du in users:
            try:
                os.unlink(du._lease)
            except FileNotFoundError:
                pass


def dynamic_user(user: str | None, privileges: Privileges) -> DynamicUser | None:
    """A fresh uid for the agent `run` starts, unless --user names one or the
    policy turns it off (privileges.dynamic_user: false)."""
    if user is not None or not privileges.dynamic_user:
        return None
    return DynamicUser.allocate(privileges.dynamic_user_range)


def remove_owned(directory: str, uids: set[int], depth: int = 1) -> None:
    """Remove the entries of `directory` that `uids` own (never following a
    link: a link is removed itself), and theirs inside the world-writable
    sticky directories someone else owns there (/tmp/.X11-unix), `depth`
    levels down."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for e in entries:
        try:
            st = e.stat(follow_symlinks=False)
            if st.st_uid not in uids:
                if depth > 0 and stat.S_ISDIR(st.st_mode) and st.st_mode & 0o1002 == 0o1002:
                    remove_owned(e.path, uids, depth - 1)
                continue
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path, ignore_errors=True)
            else:
                os.unlink(e.path)
        except OSError:
            continue
