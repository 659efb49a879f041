"""Remove the System V IPC objects a released uid left behind.

A dynamic uid is given to another agent later; a shared memory segment,
semaphore set or message queue the first one left (they outlive every
process) would hand the next episode its predecessor's state: a channel
between episodes an RL agent can learn to use. Hand-written: systemd's
RemoveIPC= (src/shared/clean-ipc.c) does this inside PID 1 for its own
dynamic users, and no Python library does. The kernel lists each object
with its owner and creator in /proc/sysvipc/{shm,sem,msg}; root removes
one with IPC_RMID. POSIX message queues are files in /dev/mqueue, removed
with the scratch directories (dynamic_user.SCRATCH_DIRS)."""

from __future__ import annotations

import ctypes
from collections.abc import Callable

IPC_RMID = 0
_LIBC = ctypes.CDLL(None, use_errno=True)
_ID_COLUMN = {"shm": "shmid", "sem": "semid", "msg": "msqid"}


def owned_ids(kind: str, uids: set[int], proc_sysvipc: str = "/proc/sysvipc") -> list[int]:
    """Ids of the `kind` objects that one of `uids` owns or created."""
    try:
        with open(f"{proc_sysvipc}/{kind}", encoding="ascii", errors="replace") as fh:
            header = fh.readline().split()
            rows = [line.split() for line in fh]
    except OSError:
        return []
    at = {name: header.index(name) for name in (_ID_COLUMN[kind], "uid", "cuid")}
    return [int(r[at[_ID_COLUMN[kind]]]) for r in rows if len(r) == len(header)
            and (int(r[at["uid"]]) in uids or int(r[at["cuid"]]) in uids)]


def remove_ipc(uids: set[int], proc_sysvipc: str = "/proc/sysvipc") -> int:
    """IPC_RMID each object of `uids`; how many went."""
    calls: dict[str, Callable[[int, int, None], int]] = {
        "shm": _LIBC.shmctl, "sem": lambda i, cmd, _: _LIBC.semctl(i, 0, cmd), "msg": _LIBC.msgctl}
    gone = 0
    for kind, call in calls.items():
        for ident in owned_ids(kind, uids, proc_sysvipc):
            gone += call(ident, IPC_RMID, None) == 0
    return gone
